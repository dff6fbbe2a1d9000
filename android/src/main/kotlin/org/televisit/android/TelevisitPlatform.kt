package org.televisit.android

import android.content.Context

/**
 * Prepares the Rust library for Android; call [initialize] once before the first call (in
 * `Application.onCreate`, or just before `TelevisitCall.open`). The core verifies the server's TLS
 * certificate with Android's own verifier (`rustls-platform-verifier`), which reaches the JVM
 * through the app's [Context]: without this, the first `https` connection aborts the process
 * ("Expect rustls-platform-verifier to be initialized"). The verifier's Kotlin part is the
 * `rustls:rustls-platform-verifier` AAR (see build.gradle.kts).
 */
object TelevisitPlatform {
    @Volatile
    private var initialized = false

    /** Loads the library and hands it the application context; idempotent and thread-safe. */
    @Synchronized
    fun initialize(context: Context) {
        if (initialized) return
        System.loadLibrary("televisit_ffi")
        initTls(context.applicationContext ?: context)
        initialized = true
    }

    /** Implemented in the Rust library (bindings/src/android.rs); throws IllegalStateException on a JNI failure. */
    @JvmStatic
    private external fun initTls(context: Context)
}
