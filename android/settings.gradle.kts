// The Android library module (build.gradle.kts) for a machine with the Android SDK: CI's emulator
// job (.github/workflows/android.yml). Not used on the development machine (no SDK reachable).
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

rootProject.name = "televisit"
