package org.televisit

import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.delay
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.isActive
import kotlinx.coroutines.launch
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.jupiter.api.Assertions.assertEquals
import org.junit.jupiter.api.Assertions.assertTrue
import org.junit.jupiter.api.Test
import org.junit.jupiter.api.assertThrows
import org.televisit.ffi.Call
import org.televisit.ffi.CallEvent
import org.televisit.ffi.CallException
import org.televisit.ffi.CallListener
import org.televisit.ffi.CallOptions
import org.televisit.ffi.CallState
import org.televisit.ffi.EndReason
import org.televisit.ffi.MediaFrame
import org.televisit.ffi.MediaKind
import org.televisit.ffi.Role
import org.televisit.ffi.SignalingTransport
import org.televisit.ffi.VideoCodec
import org.televisit.ffi.VideoPreference
import java.nio.ByteBuffer
import java.util.concurrent.CopyOnWriteArrayList

/** Collects a call's events so a test can wait for one. */
class EventLog(call: TelevisitCall, scope: CoroutineScope) {
    val events = MutableStateFlow<List<CallEvent>>(emptyList())

    init {
        scope.launch(Dispatchers.Default) { call.events.collect { e -> events.value = events.value + e } }
    }

    suspend fun await(what: String, predicate: (CallEvent) -> Boolean): CallEvent =
        try {
            withTimeout(30_000) { events.first { list -> list.any(predicate) }.first(predicate) }
        } catch (e: Exception) {
            throw AssertionError("no event: $what; got ${events.value.filter { it !is CallEvent.RemoteFrame && it !is CallEvent.Stats }}", e)
        }

    fun videoFrames(): List<MediaFrame> = events.value.filterIsInstance<CallEvent.RemoteFrame>()
        .map { it.frame }.filter { it.kind == MediaKind.VIDEO }
}

/** The picture size in a VP8 keyframe's header (RFC 6386 §9.1), or null if this is not one. */
fun vp8KeyframeSize(data: ByteArray): Pair<Int, Int>? {
    val b = data.map { it.toInt() and 0xff }
    if (b.size < 10 || b[0] and 1 != 0 || b[3] != 0x9d || b[4] != 0x01 || b[5] != 0x2a) return null
    return Pair((b[6] or (b[7] shl 8)) and 0x3fff, (b[8] or (b[9] shl 8)) and 0x3fff)
}

/** Picture sizes of the core's video ladder (1080p down to 180p). */
val LADDER_SIZES = setOf(1920 to 1080, 1280 to 720, 960 to 540, 640 to 360, 320 to 180)

/** A VP8-shaped frame with a readable counter (bytes 2..6), as the headless client sends. */
fun syntheticVideo(n: Int): MediaFrame {
    val keyframe = n % 30 == 0
    val data = ByteArray(if (keyframe) 12_000 else 3_000) { (n % 251).toByte() }
    data[0] = if (keyframe) 0x10 else 0x11
    data[1] = 2
    ByteBuffer.wrap(data, 2, 4).putInt(n)
    return MediaFrame(MediaKind.VIDEO, data, 33u, keyframe)
}

class CallTest {
    @Test
    fun `patient waits, connects, exchanges video and chat, sees the doctor mute, gets the duration`(): Unit = runBlocking {
        TestVisit().use { visit ->
            // This phone prefers H.264; the doctor's side offers VP8 only, and the offer decides.
            val options = CallOptions(videoCodecs = listOf(VideoCodec.H264, VideoCodec.VP8))
            TelevisitCall.open(visit.patientLink, options).use { call ->
                val log = EventLog(call, this)
                assertEquals(Role.PATIENT, call.join())
                log.await("waiting room") { it == CallEvent.StateChanged(CallState.WAITING_ROOM) }
                assertThrows<CallException.NotAllowed> { call.shareScreen(true) }
                assertThrows<CallException.NotAllowed> { call.examine(true) }
                call.setVideoPreference(VideoPreference.DETAIL)

                val doctor = visit.headless(
                    visit.doctorLink, "--seconds", "6", "--chat", "Hello from the doctor", "--mute-after-seconds", "1",
                )
                log.await("connected") { it == CallEvent.StateChanged(CallState.CONNECTED) }
                log.await("told to encode VP8") { it == CallEvent.VideoCodec(VideoCodec.VP8) }
                val camera = launch(Dispatchers.Default) {
                    var n = 0
                    while (isActive) { call.sendFrame(syntheticVideo(n++)); delay(33) }
                }
                val chat = log.await("the doctor's chat") { it is CallEvent.ChatReceived && it.message.from == Role.DOCTOR }
                assertEquals("Hello from the doctor", (chat as CallEvent.ChatReceived).message.text)
                call.sendChat("Hello from the patient")
                log.await("own chat echoed") { it is CallEvent.ChatReceived && it.message.from == Role.PATIENT }
                log.await("the doctor muted") { it is CallEvent.PeerMediaChanged && !it.microphoneOn && it.cameraOn }

                val ended = log.await("ended") { it is CallEvent.Ended } as CallEvent.Ended
                camera.cancel()
                val reason = ended.reason as EndReason.CallEnded
                assertEquals(Role.DOCTOR, reason.endedBy)
                assertTrue(reason.durationSeconds in 5..30, "duration ${reason.durationSeconds}")
                assertEquals(reason, call.awaitEnd())

                // The doctor's camera is live VP8 (the core's software encoder): the app would hand these
                // frames to its decoder. Real keyframes with a picture size from the ladder must be among them.
                val video = log.videoFrames()
                assertTrue(video.size >= 60, "two seconds of the doctor's video arrived: ${video.size}")
                val sizes = video.filter { it.keyframe }.mapNotNull { vp8KeyframeSize(it.data) }
                assertTrue(sizes.isNotEmpty() && sizes.all { it in LADDER_SIZES }, "VP8 keyframes: $sizes")
                // Each frame has its RTP timestamp and, from the doctor's first sender report on, the time
                // the doctor sent it on the doctor's clock (this machine's here): what lip sync compares.
                assertTrue(video.all { it.rtpTimestamp != null }, "every frame has its RTP timestamp")
                val sentAt = video.mapNotNull { it.captureTimeUs }
                assertTrue(sentAt.size * 2 >= video.size, "${sentAt.size} of ${video.size} frames dated")
                val nowUs = System.currentTimeMillis() * 1000
                assertTrue(sentAt.all { nowUs - it in 0..60_000_000 }, "sent within the last minute: ${sentAt.take(3)}")
                assertTrue(sentAt.zipWithNext().all { (a, b) -> b >= a }, "in the order sent")
                assertEquals(0, doctor.waitFor(20))
                val out = doctor.output()
                assertTrue(out.contains("event: chat from patient: Hello from the patient"), out)
                val received = Regex("""summary: video frames received (\d+)""").find(out)!!.groupValues[1].toInt()
                assertTrue(received >= 30, "the doctor received the app's video: $received\n$out")
            }
        }
    }

    @Test
    fun `doctor ends the call and gets the duration`(): Unit = runBlocking {
        TestVisit().use { visit ->
            TelevisitCall.open(visit.doctorLink).use { call ->
                val log = EventLog(call, this)
                assertEquals(Role.DOCTOR, call.join())
                val patient = visit.headless(visit.patientLink)
                log.await("connected") { it == CallEvent.StateChanged(CallState.CONNECTED) }
                log.await("a video frame") { it is CallEvent.RemoteFrame && it.frame.kind == MediaKind.VIDEO }
                call.examine(true) // the patient's camera keeps its resolution from now on
                // The stats name the path ICE chose: on loopback, no relay.
                val stats = (log.await("stats with the selected pair") {
                    it is CallEvent.Stats && it.stats.localCandidateType != null && it.stats.remoteCandidateType != null
                } as CallEvent.Stats).stats
                assertTrue(stats.localCandidateType in setOf("host", "prflx"), "$stats")
                assertTrue(stats.remoteCandidateType in setOf("host", "prflx"), "$stats")
                assertEquals(null, stats.relayTransport)
                assertEquals(false, CallOptions().relayOnly, "relay-only is the app's choice (or the clinic's)")
                delay(1_500)
                val end = call.hangUp() as EndReason.CallEnded
                assertEquals(Role.DOCTOR, end.endedBy)
                assertTrue(end.durationSeconds >= 1, "duration ${end.durationSeconds}")
                assertEquals(0, patient.waitFor(20))
                assertTrue(patient.output().contains("ended: CallEnded { ended_by: Some(Doctor)"), patient.output())
                assertTrue(patient.output().contains("event: examination mode on"), patient.output())
            }
        }
    }

    @Test
    fun `two phones with the platform's defaults send H_264, and a VP8-only peer still gets VP8`(): Unit = runBlocking {
        assertEquals(listOf(VideoCodec.H264, VideoCodec.VP8), TelevisitCall.PLATFORM_VIDEO_CODECS)
        TestVisit().use { visit ->
            // Two apps with default options (the doctor's side offers, the patient's answers).
            TelevisitCall.open(visit.doctorLink).use { doctor ->
                TelevisitCall.open(visit.patientLink).use { patient ->
                    val doctorLog = EventLog(doctor, this)
                    val patientLog = EventLog(patient, this)
                    patient.join()
                    doctor.join()
                    for (log in listOf(doctorLog, patientLog)) {
                        log.await("told to encode H.264") { it == CallEvent.VideoCodec(VideoCodec.H264) }
                    }
                    doctor.hangUp()
                }
            }
        }
        TestVisit().use { visit ->
            // A peer that has only VP8 (as `televisit join` here, and browsers without H.264).
            TelevisitCall.open(visit.doctorLink, CallOptions(relayOnly = false)).use { doctor ->
                val log = EventLog(doctor, this)
                doctor.join()
                val patient = visit.headless(visit.patientLink, "--seconds", "2")
                log.await("told to encode VP8") { it == CallEvent.VideoCodec(VideoCodec.VP8) }
                assertEquals(0, patient.waitFor(20))
            }
        }
    }

    @Test
    fun `an app forced onto the HTTP signaling fallback joins, chats and ends`(): Unit = runBlocking {
        TestVisit().use { visit ->
            val httpOnly = CallOptions(signalingTransport = SignalingTransport.HTTP_ONLY)
            TelevisitCall.open(visit.patientLink, httpOnly).use { patient ->
                TelevisitCall.open(visit.doctorLink).use { doctor ->
                    val patientLog = EventLog(patient, this)
                    val doctorLog = EventLog(doctor, this)
                    assertEquals(Role.PATIENT, patient.join())
                    patientLog.await("waiting room") { it == CallEvent.StateChanged(CallState.WAITING_ROOM) }
                    doctor.join()
                    patientLog.await("connected") { it == CallEvent.StateChanged(CallState.CONNECTED) }
                    patient.sendChat("Sent over HTTP")
                    doctorLog.await("the patient's chat") { it is CallEvent.ChatReceived && it.message.text == "Sent over HTTP" }
                    doctor.hangUp()
                    val ended = patientLog.await("ended") { it is CallEvent.Ended } as CallEvent.Ended
                    val reason = ended.reason
                    assertTrue(reason is EndReason.CallEnded, "the doctor's end, not: $reason")
                    assertEquals(Role.DOCTOR, (reason as EndReason.CallEnded).endedBy)
                }
            }
        }
    }

    @Test
    fun `an expired link and a wrong link raise typed errors`(): Unit = runBlocking {
        TestVisit().use { visit ->
            val expired = forgeLink(visit.patientLink, expiry = System.currentTimeMillis() / 1000 - 60)
            val e = assertThrows<CallException.LinkExpired> { TelevisitCall.open(expired) }
            assertTrue(e.message!!.contains("expired"), e.message)
            assertThrows<CallException.LinkInvalid> { TelevisitCall.open("https://clinic.example/not-a-link") }

            val wrong = forgeLink(visit.patientLink, expiry = System.currentTimeMillis() / 1000 + 3600)
            TelevisitCall.open(wrong).use { call ->
                assertThrows<CallException.LinkInvalid> { call.join() }
                assertEquals(CallState.ENDED, call.state)
            }
        }
    }

    @Test
    fun `callbacks arrive off the caller's thread and stop at release`(): Unit = runBlocking {
        TestVisit().use { visit ->
            val threads = CopyOnWriteArrayList<String>()
            val listener = object : CallListener {
                override fun onEvent(event: CallEvent) { threads += Thread.currentThread().name }
            }
            val call = Call(visit.patientLink, listener, CallOptions())
            assertEquals(Role.PATIENT, call.join())
            withTimeout(10_000) { while (call.state() != CallState.WAITING_ROOM) delay(20) }
            call.release()
            val seen = threads.size
            // JNA attaches the core's event thread to the JVM under a generated name per callback.
            assertTrue(seen >= 2, "$threads")
            assertTrue(Thread.currentThread().name !in threads && "main" !in threads, "$threads")
            delay(500)
            assertEquals(seen, threads.size, "no event after release")
            assertThrows<CallException.Closed> { call.sendChat("too late") }
            assertThrows<CallException.Closed> { call.join() }
            call.close()
        }
    }
}
