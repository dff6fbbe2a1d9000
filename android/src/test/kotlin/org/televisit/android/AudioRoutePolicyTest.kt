package org.televisit.android

import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Test
import org.televisit.android.AudioRoute.BLUETOOTH
import org.televisit.android.AudioRoute.EARPIECE
import org.televisit.android.AudioRoute.SPEAKER
import org.televisit.android.AudioRoute.WIRED_HEADSET

/** The routing decisions, on the plain JVM: no Android involved. */
class AudioRoutePolicyTest {
    private val phone = setOf(EARPIECE, SPEAKER)

    @Test
    fun `a video visit plays on the speaker, a voice-only one on the earpiece`() {
        assertEquals(SPEAKER, AudioRoutePolicy.choose(phone, userChoice = null, video = true))
        assertEquals(EARPIECE, AudioRoutePolicy.choose(phone, userChoice = null, video = false))
    }

    @Test
    fun `a headset beats the phone, Bluetooth before wired`() {
        assertEquals(WIRED_HEADSET, AudioRoutePolicy.choose(phone + WIRED_HEADSET, null, video = true))
        assertEquals(BLUETOOTH, AudioRoutePolicy.choose(phone + WIRED_HEADSET + BLUETOOTH, null, video = false))
    }

    @Test
    fun `the user's pick wins while its device is there, then the automatic choice comes back`() {
        assertEquals(EARPIECE, AudioRoutePolicy.choose(phone + BLUETOOTH, userChoice = EARPIECE, video = true))
        assertEquals(SPEAKER, AudioRoutePolicy.choose(phone + BLUETOOTH, userChoice = SPEAKER, video = false))
        // The Bluetooth headset the user picked ran out of battery.
        assertEquals(SPEAKER, AudioRoutePolicy.choose(phone, userChoice = BLUETOOTH, video = true))
    }

    @Test
    fun `a tablet without an earpiece uses its speaker, and no output means no route`() {
        assertEquals(SPEAKER, AudioRoutePolicy.choose(setOf(SPEAKER), null, video = false))
        assertEquals(EARPIECE, AudioRoutePolicy.choose(setOf(EARPIECE), null, video = true))
        assertEquals(null, AudioRoutePolicy.choose(emptySet(), null, video = true))
    }
}
