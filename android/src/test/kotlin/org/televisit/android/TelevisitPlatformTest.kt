package org.televisit.android

import android.content.ContextWrapper
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows

/**
 * The TLS verifier's JNI entry point, called from Kotlin through the real library on the JVM
 * (android-all's real `ContextWrapper` stands in for the app). On a phone the same call hands the
 * context to rustls-platform-verifier; here it proves the symbol, its signature and the error path.
 */
class TelevisitPlatformTest {
    /** A context as the app's: it answers getClassLoader (an unattached ContextWrapper throws). */
    private class AppContext : ContextWrapper(null) {
        var asked = 0
        override fun getClassLoader(): ClassLoader { asked++; return javaClass.classLoader }
        override fun getApplicationContext() = this
    }

    @Test
    fun `a context that fails reaches Kotlin as its exception, and a later initialisation still runs`() {
        val broken = object : ContextWrapper(null) { // no base context: getClassLoader throws in Java
            override fun getApplicationContext() = this
        }
        assertThrows<NullPointerException> { TelevisitPlatform.initialize(broken) }
        val app = AppContext()
        TelevisitPlatform.initialize(app)
        assertEquals(1, app.asked, "the library asked the context for its class loader")
        TelevisitPlatform.initialize(app) // idempotent: the library is not asked again
        assertEquals(1, app.asked)
    }
}
