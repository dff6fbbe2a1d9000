// The Android library module over the same sources as pom.xml (which builds and tests them on the
// JVM here). Runs only where the Android SDK is: CI's emulator job (.github/workflows/android.yml);
// this machine has no SDK or Gradle plugin (see README.md). The Rust library comes from
// `cargo ndk ... -o build/rustJniLibs` (see the workflow).
import groovy.json.JsonSlurper

plugins {
    id("com.android.library") version "8.7.3"
    id("org.jetbrains.kotlin.android") version "2.2.21"
}

/** The Kotlin part of rustls-platform-verifier's Android verifier, as the core's verifier (0.6) wants it. */
val rustlsPlatformVerifierVersion = "0.1.1"

repositories {
    google()
    mavenCentral()
    // rustls-platform-verifier ships its Kotlin part inside its Rust crate (rustls-platform-verifier-android)
    // as a Maven repository; cargo knows where the crate is.
    for (dir in rustlsPlatformVerifierRepositories()) {
        maven {
            url = uri(dir)
            metadataSources { artifact() }
        }
    }
}

fun rustlsPlatformVerifierRepositories(): List<File> {
    val json = providers.exec {
        workingDir = rootDir.parentFile
        commandLine("cargo", "metadata", "--format-version", "1", "--filter-platform", "aarch64-linux-android")
    }.standardOutput.asText.get()
    @Suppress("UNCHECKED_CAST")
    val packages = (JsonSlurper().parseText(json) as Map<String, Any>)["packages"] as List<Map<String, Any>>
    return packages.filter { it["name"] == "rustls-platform-verifier-android" }
        .map { File(File(it["manifest_path"] as String).parentFile, "maven") }
}

android {
    namespace = "org.televisit"
    compileSdk = 35
    defaultConfig {
        minSdk = 26
        testInstrumentationRunner = "androidx.test.runner.AndroidJUnitRunner"
        consumerProguardFiles("consumer-rules.pro")
    }
    sourceSets["main"].kotlin.srcDir("src/main/kotlin")
    sourceSets["main"].jniLibs.srcDir("build/rustJniLibs")
    sourceSets["androidTest"].kotlin.srcDir("src/androidTest/kotlin")
    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
}

kotlin { jvmToolchain(17) }

dependencies {
    implementation("net.java.dev.jna:jna:5.18.1@aar")
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-android:1.10.2")
    implementation("rustls:rustls-platform-verifier:$rustlsPlatformVerifierVersion")
    androidTestImplementation("androidx.test:runner:1.7.0")
    androidTestImplementation("junit:junit:4.13.2")
}
