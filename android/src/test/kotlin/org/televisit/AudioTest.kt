package org.televisit

import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows
import org.televisit.ffi.AudioException
import org.televisit.ffi.Call
import org.televisit.ffi.CallEvent
import org.televisit.ffi.CallListener
import org.televisit.ffi.CallOptions
import org.televisit.ffi.CallState
import org.televisit.ffi.Role
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.util.concurrent.LinkedBlockingQueue
import java.util.concurrent.TimeUnit
import kotlin.math.PI
import kotlin.math.cos
import kotlin.math.sin
import kotlin.math.sqrt

/** 10 ms of a sine tone at [hz] (48 kHz mono, 16-bit little-endian), the [n]-th frame of it. */
fun toneFrame(hz: Double, n: Int): ByteArray {
    val buffer = ByteBuffer.allocate(960).order(ByteOrder.LITTLE_ENDIAN)
    for (i in 0 until 480) {
        val t = (n * 480 + i) / 48_000.0
        buffer.putShort((sin(2 * PI * hz * t) * 10_000).toInt().toShort())
    }
    return buffer.array()
}

/** The signal's power at [hz] (Goertzel). */
fun goertzel(samples: ShortArray, hz: Double): Double {
    val coefficient = 2 * cos(2 * PI * hz / 48_000)
    var (s1, s2) = 0.0 to 0.0
    for (sample in samples) {
        val s0 = sample + coefficient * s1 - s2
        s2 = s1
        s1 = s0
    }
    return s1 * s1 + s2 * s2 - coefficient * s1 * s2
}

fun rms(samples: ShortArray): Double = sqrt(samples.sumOf { it.toDouble() * it } / samples.size)

class AudioTest {
    @Test
    fun `the app pushes microphone PCM and pulls the doctor's voice as PCM`(): Unit = runBlocking {
        TestVisit().use { visit ->
            val events = LinkedBlockingQueue<CallEvent>()
            val listener = object : CallListener {
                override fun onEvent(event: CallEvent) { events.add(event) }
            }
            Call(visit.patientLink, listener, CallOptions()).use { call ->
                assertEquals(Role.PATIENT, call.join())
                val source = call.audioSource()
                val sink = call.audioSink()
                val wrong = assertThrows<AudioException.WrongFrameSize> { source.push(ByteArray(100)) }
                assertEquals(480u, wrong.expected)
                assertEquals(50u, wrong.got)
                assertThrows<AudioException.OddByteCount> { source.push(ByteArray(961)) }

                // The doctor is `televisit join`: it sends a 440 Hz tone and decodes what it gets.
                val doctor = visit.headless(visit.doctorLink, "--seconds", "5")
                while (true) {
                    val event = events.poll(30, TimeUnit.SECONDS) ?: throw AssertionError("not connected")
                    if (event == CallEvent.StateChanged(CallState.CONNECTED)) break
                }
                // Three seconds of the devices in real time: a 660 Hz microphone, a speaker pulling.
                val played = ShortArray(300 * 480)
                val start = System.nanoTime()
                for (n in 0 until 300) {
                    source.push(toneFrame(660.0, n))
                    val frame = sink.pull()
                    assertEquals(960, frame.size)
                    ByteBuffer.wrap(frame).order(ByteOrder.LITTLE_ENDIAN).asShortBuffer().get(played, n * 480, 480)
                    val wait = start + (n + 1) * 10_000_000L - System.nanoTime()
                    if (wait > 0) Thread.sleep(wait / 1_000_000, (wait % 1_000_000).toInt())
                }
                val lastSecond = played.copyOfRange(200 * 480, 300 * 480)
                val stats = sink.stats()
                assertTrue(rms(lastSecond) > 3000, "the doctor's tone is loud: rms ${rms(lastSecond)}, $stats")
                val ratio = goertzel(lastSecond, 440.0) / goertzel(lastSecond, 660.0)
                assertTrue(ratio > 1000, "the doctor's 440 Hz, not our 660 Hz: $ratio, $stats")
                assertTrue(stats.packetsReceived >= 75u, "$stats")
                // The sound playing is dated on the doctor's clock (this machine's), for lip sync: it
                // was sent a jitter buffer and a network ago, not in the future nor minutes ago.
                val playingSentAt = sink.playingCaptureTimeUs()
                val agoMs = playingSentAt?.let { (System.currentTimeMillis() * 1000 - it) / 1000 }
                assertTrue(agoMs != null && agoMs in 0..2_000, "playing sound sent $agoMs ms ago")

                assertEquals(0, doctor.waitFor(20))
                val out = doctor.output()
                val decoded = Regex("""summary: .*?audio frames decoded (\d+)""").find(out)!!.groupValues[1].toInt()
                assertTrue(decoded >= 100, "the doctor decoded our Opus: $decoded\n$out")

                call.release()
                assertThrows<AudioException.Closed> { sink.pull() }
                assertThrows<AudioException.Closed> { source.push(toneFrame(660.0, 0)) }
            }
        }
    }

    @Test
    fun `an app on TelevisitCall reaches the same audio source and sink`(): Unit = runBlocking {
        TestVisit().use { visit ->
            TelevisitCall.open(visit.patientLink).use { call ->
                assertEquals(Role.PATIENT, call.join())
                call.audioSource().push(toneFrame(660.0, 0))
                assertThrows<AudioException.WrongFrameSize> { call.audioSource().push(ByteArray(10)) }
                // Nobody speaks yet (the patient waits for the doctor): the sink still gives a whole
                // 10 ms frame, of silence, for the speaker.
                val frame = call.audioSink().pull()
                assertEquals(960, frame.size)
                assertTrue(frame.all { it == 0.toByte() }, "silence before anyone speaks")
                assertEquals(null, call.audioSink().playingCaptureTimeUs(), "no sound, no date")
            }
        }
    }
}
