package org.televisit.device

import androidx.test.platform.app.InstrumentationRegistry
import kotlinx.coroutines.runBlocking
import org.junit.Assert.assertTrue
import org.junit.Test
import org.televisit.TelevisitCall
import org.televisit.android.TelevisitPlatform
import org.televisit.ffi.CallException

/**
 * On a device or emulator only (.github/workflows/android.yml): the core's first https handshake
 * with Android's certificate verifier. Without [TelevisitPlatform.initialize] the process aborts
 * ("Expect rustls-platform-verifier to be initialized"); with it, a public server's certificate is
 * verified and its answer (a web server that is not Televisit, code `http_404`) comes back as
 * `CallException.Server`, where a failed verification would be `ServerUnreachable`. The host is the
 * instrumentation argument `televisitHost` (default example.com). Compiled on this machine by
 * `scripts/test android`, never run here.
 */
class TlsOnDeviceTest {
    @Test
    fun theFirstHttpsHandshakeIsVerifiedByAndroid(): Unit = runBlocking {
        TelevisitPlatform.initialize(InstrumentationRegistry.getInstrumentation().targetContext)
        val host = InstrumentationRegistry.getArguments().getString("televisitHost", "example.com")
        val link = "https://$host" +
            "/medical/appointments/device-test/video-call/#token=tv1.4102444800.${"A".repeat(43)}"
        TelevisitCall.open(link).use { call ->
            val error = runCatching { call.join() }.exceptionOrNull()
            assertTrue("$error", error is CallException.Server)
        }
    }
}
