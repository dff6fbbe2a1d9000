package org.televisit

import kotlinx.coroutines.runBlocking
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows
import org.televisit.ffi.CallEvent
import org.televisit.ffi.CallState
import org.televisit.ffi.EncodedVideo
import org.televisit.ffi.EncoderSettings
import org.televisit.ffi.PlatformVideoEncoder
import org.televisit.ffi.Role
import org.televisit.ffi.VideoCodec
import org.televisit.ffi.VideoException
import org.televisit.ffi.VideoPicture
import org.televisit.ffi.readTestPattern
import org.televisit.ffi.testPatternPicture
import java.util.concurrent.CopyOnWriteArrayList

/** Picture [n] of the test pattern, 640×360, as a camera gives it. */
fun cameraPicture(n: Int): VideoPicture = testPatternPicture(n.toUInt(), 640u, 360u)

class VideoTest {
    @Test
    fun `the app pushes camera pictures and pulls the doctor's decoded pictures`(): Unit = runBlocking {
        TestVisit().use { visit ->
            TelevisitCall.open(visit.patientLink).use { call ->
                val log = EventLog(call, this)
                assertEquals(Role.PATIENT, call.join())
                val source = call.videoSource()
                val sink = call.videoSink()
                assertThrows<VideoException.BadPicture> { source.pushI420(VideoPicture(640u, 360u, ByteArray(10), ByteArray(0), ByteArray(0)), 0, 0) }
                val ok = cameraPicture(0)
                assertThrows<VideoException.BadPicture> { source.pushI420(ok, 45, 0) }

                // The doctor is `televisit join`: it sends the test pattern and decodes what it gets.
                val doctor = visit.headless(visit.doctorLink, "--seconds", "6")
                log.await("connected") { it == CallEvent.StateChanged(CallState.CONNECTED) }
                // Four seconds of a 30 fps camera (pushed as NV12, upright), and a view pulling every 10 ms.
                val counters = mutableListOf<Int>()
                var last: org.televisit.ffi.DecodedPicture? = null
                val start = System.nanoTime()
                var pushed = 0
                while (System.nanoTime() - start < 4_000_000_000L) {
                    if ((System.nanoTime() - start) / 33_333_333L >= pushed) {
                        val p = cameraPicture(pushed)
                        val uv = ByteArray(p.u.size * 2) { if (it % 2 == 0) p.u[it / 2] else p.v[it / 2] }
                        source.pushNv12(p.width, p.height, p.y, uv, 0, (System.nanoTime() - start) / 1000)
                        pushed++
                    }
                    while (true) {
                        val picture = sink.pull() ?: break
                        readTestPattern(picture.picture)?.let { counters += it.toInt() }
                        last = picture
                    }
                    Thread.sleep(10)
                }
                val stats = sink.stats()
                val shown = last ?: throw AssertionError("no picture of the doctor: $stats")
                assertTrue(counters.size >= 60, "two seconds of the doctor's pictures: ${counters.size}, $stats")
                assertTrue(counters.zipWithNext().all { (a, b) -> b > a }, "in order: ${counters.take(20)}")
                assertTrue(shown.picture.width > shown.picture.height, "the doctor's landscape picture: ${shown.picture.width}x${shown.picture.height}")
                val agoMs = shown.captureTimeUs?.let { (System.currentTimeMillis() * 1000 - it) / 1000 }
                assertTrue(agoMs != null && agoMs in 0..2_000, "captured $agoMs ms ago")
                val sent = source.stats()
                assertTrue(sent.framesSent >= 60u, "$sent")
                assertEquals(640u to 360u, sent.encodedWidth to sent.encodedHeight, "the start rung: $sent")

                assertEquals(0, doctor.waitFor(20))
                val out = doctor.output()
                val decoded = Regex("""video frames decoded (\d+)""").find(out)!!.groupValues[1].toInt()
                assertTrue(decoded >= 60, "the doctor decoded our pictures: $decoded\n$out")
                val counter = Regex("""last picture counter (\d+)""").find(out)!!.groupValues[1].toInt()
                assertTrue(counter in pushed - 60..pushed, "the doctor saw our counter $counter of $pushed\n$out")

                call.close()
                assertThrows<VideoException.Closed> { sink.pull() }
                assertThrows<VideoException.Closed> { source.pushI420(ok, 0, 0) }
            }
        }
    }

    /** A stand-in for MediaCodec: records what the core asks of it and makes frames nobody decodes. */
    class RecordingEncoder : PlatformVideoEncoder {
        val settings = CopyOnWriteArrayList<EncoderSettings>()
        val pictures = CopyOnWriteArrayList<Pair<UInt, UInt>>()
        @Volatile var keyframeRequests = 0

        override fun configure(settings: EncoderSettings) { this.settings += settings }
        override fun requestKeyframe() { keyframeRequests++ }
        override fun encode(picture: VideoPicture): EncodedVideo? {
            pictures += picture.width to picture.height
            if (pictures.size == 5) throw IllegalStateException("the codec hiccuped")
            return EncodedVideo(ByteArray(100), pictures.size == 1)
        }
    }

    @Test
    fun `a platform encoder is configured from the ladder and fed upright pictures`(): Unit = runBlocking {
        TestVisit().use { visit ->
            TelevisitCall.open(visit.patientLink).use { call ->
                val log = EventLog(call, this)
                call.join()
                val encoder = RecordingEncoder()
                val source = call.videoSource(encoder)
                val doctor = visit.headless(visit.doctorLink, "--seconds", "3")
                log.await("connected") { it == CallEvent.StateChanged(CallState.CONNECTED) }
                val start = System.nanoTime()
                for (n in 0 until 30) {
                    val p = cameraPicture(n)
                    source.pushI420(p, 270, (System.nanoTime() - start) / 1000)
                    Thread.sleep(33)
                }
                val first = encoder.settings.first()
                // A sensor mounted sideways: the core turns its 640×360 pictures upright (a quarter
                // counter-clockwise here) and fits the start rung (360p) to the portrait picture. The
                // doctor's side offers VP8 only, so that is what the platform encoder is asked for.
                assertEquals(EncoderSettings(VideoCodec.VP8, 360u, 640u, 30u, first.bitrateBps), first)
                assertTrue(first.bitrateBps in 100_000uL..2_000_000uL, "$first")
                assertTrue(encoder.pictures.all { it == 360u to 640u }, "upright pictures: ${encoder.pictures.take(3)}")
                val stats = source.stats()
                assertEquals(1uL, stats.encoderErrors, "the codec's exception is counted, not fatal: $stats")
                assertTrue(stats.framesSent >= 20u, "$stats")
                doctor.waitFor(20)
            }
        }
    }
}
