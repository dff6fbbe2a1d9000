package org.televisit.android

import android.Manifest
import org.junit.After
import org.junit.Assert.assertEquals
import org.junit.Assert.assertThrows
import org.junit.Assert.assertTrue
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.RobolectricTestRunner
import org.robolectric.RuntimeEnvironment
import org.robolectric.Shadows.shadowOf
import org.televisit.PatientCall

/** The microphone and speaker loops on Robolectric's AudioRecord and AudioTrack, with a real call's source and sink. */
@RunWith(RobolectricTestRunner::class)
class VoiceAudioTest {
    private val app = RuntimeEnvironment.getApplication()
    private val patient = PatientCall()
    private val call = patient.call

    @After
    fun close() = patient.close()

    @Test
    fun `without the microphone permission nothing starts`() {
        val voice = VoiceAudio(app, call.audioSource(), call.audioSink())
        assertThrows(IllegalStateException::class.java) { voice.start() }
        assertEquals(0L, voice.framesCaptured)
    }

    @Test
    fun `frames flow both ways until stop, and a released call ends the loops without a crash`() {
        shadowOf(app).grantPermissions(Manifest.permission.RECORD_AUDIO)
        val voice = VoiceAudio(app, call.audioSource(), call.audioSink())
        voice.start()
        val deadline = System.currentTimeMillis() + 5_000
        while ((voice.framesCaptured < 10 || voice.framesPlayed < 10) && System.currentTimeMillis() < deadline) Thread.sleep(10)
        assertTrue("captured ${voice.framesCaptured}, played ${voice.framesPlayed}", voice.framesCaptured >= 10 && voice.framesPlayed >= 10)
        voice.stop()
        val (captured, played) = voice.framesCaptured to voice.framesPlayed
        Thread.sleep(100)
        assertEquals("nothing after stop", captured to played, voice.framesCaptured to voice.framesPlayed)

        voice.start()
        assertTrue(voice.isRunning)
        call.release() // the source and sink refuse from now on: the loops end on their own
        val ended = System.currentTimeMillis() + 5_000
        while (voice.isRunning && System.currentTimeMillis() < ended) Thread.sleep(10)
        assertTrue("the loops stopped after the call was released", !voice.isRunning)
        voice.stop()
    }
}
