//! The JNI entry point of `org.televisit.android.TelevisitPlatform` (not part of the uniffi
//! surface: it needs the `JNIEnv` and the app's `Context`, which uniffi cannot pass).
//!
//! On Android the core verifies TLS certificates with `rustls-platform-verifier`, which calls the
//! platform's verifier through the JVM and panics on the first handshake unless it was given the
//! JVM and a `Context` first. `TelevisitPlatform.initialize(context)` calls [`init_tls`] once.

use jni::objects::{JClass, JObject};
use jni::JNIEnv;

/// `TelevisitPlatform.initTls(Context)`: hands the app's context to the TLS verifier. A JNI failure
/// comes back to Kotlin as an exception (the pending Java one, or an `IllegalStateException`).
#[unsafe(no_mangle)]
pub extern "system" fn Java_org_televisit_android_TelevisitPlatform_initTls(
    mut env: JNIEnv,
    _class: JClass,
    context: JObject,
) {
    if let Err(error) = init_tls(&mut env, context) {
        if !env.exception_check().unwrap_or(false) {
            let message = format!("Televisit could not initialise the TLS verifier: {error}");
            // If even throwing fails the JVM is beyond help; nothing else to report to.
            let _ = env.throw_new("java/lang/IllegalStateException", message);
        }
    }
}

#[cfg(target_os = "android")]
fn init_tls(env: &mut JNIEnv, context: JObject) -> jni::errors::Result<()> {
    rustls_platform_verifier::android::init_with_env(env, context)
}

/// Elsewhere the verifier reads the system's certificate store and needs no JVM. The entry point
/// still takes the step Android's init takes first (the context's class loader), so the JVM tests
/// exercise the same JNI path and a wrong argument fails the same way.
#[cfg(not(target_os = "android"))]
fn init_tls(env: &mut JNIEnv, context: JObject) -> jni::errors::Result<()> {
    if context.is_null() {
        return Err(jni::errors::Error::NullPtr("context"));
    }
    env.call_method(&context, "getClassLoader", "()Ljava/lang/ClassLoader;", &[])?.l()?;
    Ok(())
}
