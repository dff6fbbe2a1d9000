package org.televisit

import kotlinx.coroutines.channels.Channel
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.receiveAsFlow
import org.televisit.ffi.AudioException
import org.televisit.ffi.AudioSink
import org.televisit.ffi.AudioSource
import org.televisit.ffi.Call
import org.televisit.ffi.CallEvent
import org.televisit.ffi.CallException
import org.televisit.ffi.CallListener
import org.televisit.ffi.CallOptions
import org.televisit.ffi.CallState
import org.televisit.ffi.EndReason
import org.televisit.ffi.LinkInfo
import org.televisit.ffi.MediaFrame
import org.televisit.ffi.PlatformVideoDecoder
import org.televisit.ffi.PlatformVideoEncoder
import org.televisit.ffi.Role
import org.televisit.ffi.VideoCodec
import org.televisit.ffi.VideoException
import org.televisit.ffi.VideoPreference
import org.televisit.ffi.VideoSink
import org.televisit.ffi.VideoSource
import org.televisit.ffi.checkLink
import java.util.concurrent.CopyOnWriteArrayList

/**
 * One video visit, for Kotlin apps: suspend functions, a [Flow] of [CallEvent]s and typed
 * [CallException]s (`LinkExpired`, `LinkInvalid`, `CallEnded`, `NotAllowed`, ...), over the
 * generated bindings in `org.televisit.ffi`.
 *
 * ```
 * TelevisitCall.open(link).use { call ->
 *     launch { call.events.collect { event -> render(event) } }
 *     call.join()          // Role.PATIENT: now in the waiting room
 *     val end = call.awaitEnd()
 * }
 * ```
 *
 * Events come from a background thread of the core (never the main thread) and are buffered
 * without limit until collected, so none is lost; [events] is meant for one collector.
 * [close] releases the call, its connections and the listener: no event arrives after it.
 *
 * Unless [CallOptions.videoCodecs] says otherwise, the call offers [PLATFORM_VIDEO_CODECS]: H.264
 * first, which phones encode in hardware, and VP8 for browsers.
 */
class TelevisitCall private constructor(link: String, options: CallOptions) : AutoCloseable {
    private val channel = Channel<CallEvent>(Channel.UNLIMITED)
    private val observers = CopyOnWriteArrayList<(CallEvent) -> Unit>()
    private val call: Call = Call(link, Listener(channel, observers), withPlatformCodecs(options))

    /** Every event of the call, in order. Completes when the call is closed. */
    val events: Flow<CallEvent> = channel.receiveAsFlow()

    /** The call's state now. */
    val state: CallState get() = call.state()

    /** This side's role, once [join] returned. */
    val role: Role? get() = call.role()

    /** The appointment this call belongs to. */
    val appointmentId: String get() = call.appointmentId()

    /** Joins the call; returns this side's role once the server accepted the link. */
    @Throws(CallException::class)
    suspend fun join(): Role = call.join()

    /** Ends the call (doctor) or leaves it (patient); returns how it ended, with the duration. */
    @Throws(CallException::class)
    suspend fun hangUp(): EndReason = call.hangUp()

    /** Waits until the call is over for this side. */
    @Throws(CallException::class)
    suspend fun awaitEnd(): EndReason = call.waitForEnd()

    /** Mutes (false) or unmutes (true) the microphone; the peer is told. */
    fun setMicrophoneEnabled(enabled: Boolean) = call.setMicrophoneEnabled(enabled)

    /** Turns the camera off or on; the peer is told. */
    fun setCameraEnabled(enabled: Boolean) = call.setCameraEnabled(enabled)

    /** Starts or stops sharing the screen; a patient gets [CallException.NotAllowed]. */
    @Throws(CallException::class)
    fun shareScreen(active: Boolean) = call.setScreenShare(active)

    /**
     * Starts or stops the examination mode (the doctor, for a rash or a wound): the patient's camera
     * keeps its resolution and gives up frame rate when bandwidth is short. A patient gets
     * [CallException.NotAllowed].
     */
    @Throws(CallException::class)
    fun examine(active: Boolean) = call.setExamination(active)

    /** What this device's camera gives up first when bandwidth is short ([VideoPreference.DETAIL] keeps resolution). */
    @Throws(CallException::class)
    fun setVideoPreference(preference: VideoPreference) = call.setVideoPreference(preference)

    /** Sends a chat message (1 to 2000 characters). */
    @Throws(CallException::class)
    fun sendChat(text: String) = call.sendChat(text)

    /** Sends an encoded frame from the platform's codec (MediaCodec H.264 or VP8, as the `VideoCodec` event says; Opus). */
    fun sendFrame(frame: MediaFrame) = call.sendFrame(frame)

    /** The device's network changed: reconnect now (see [org.televisit.android.NetworkWatcher]). */
    fun networkChanged() = call.networkChanged()

    /**
     * The microphone's way in: push each 10 ms frame of 48 kHz mono 16-bit PCM (960 bytes) from
     * `AudioRecord`; the core encodes Opus with FEC. Use it or [sendFrame] with your own encoder.
     */
    @Throws(AudioException::class)
    fun audioSource(): AudioSource = call.audioSource()

    /**
     * The speaker's way out: pull a 10 ms frame for `AudioTrack` each time it asks (always a frame:
     * the peer's voice, concealment of a loss, or silence), through the core's jitter buffer.
     */
    @Throws(AudioException::class)
    fun audioSink(): AudioSink = call.audioSink()

    /**
     * The camera's way in: push each Camera2 picture (`pushI420` / `pushNv12`, with the rotation
     * that makes it upright and its timestamp); the core fits it to the ladder's rung and encodes it
     * with [encoder] (MediaCodec; null: the core's software VP8 where built in), following the
     * bitrate and the peer's keyframe requests. Use it or [sendFrame] with your own encoder.
     */
    @Throws(VideoException::class)
    fun videoSource(encoder: PlatformVideoEncoder? = null): VideoSource = call.videoSource(encoder)

    /**
     * The view's way out: pull the doctor's decoded I420 pictures (with their capture time, for lip
     * sync) from the display's frame callback, decoded by [decoder] (null: software VP8).
     */
    @Throws(VideoException::class)
    fun videoSink(decoder: PlatformVideoDecoder? = null): VideoSink = call.videoSink(decoder)

    /**
     * Lets the Android glue (Telecom, the foreground service) follow the call without taking events
     * from [events]. [observer] runs on the core's event thread before the event reaches [events]:
     * it must not block.
     */
    internal fun observe(observer: (CallEvent) -> Unit) {
        observers += observer
    }

    /** Releases everything; idempotent. No event is delivered after this returns. */
    override fun close() {
        if (!closed.compareAndSet(false, true)) return // the freed Call must not be touched again
        call.release()
        call.close()
        channel.close()
    }

    private val closed = java.util.concurrent.atomic.AtomicBoolean(false)

    private class Listener(
        private val channel: Channel<CallEvent>,
        private val observers: List<(CallEvent) -> Unit>,
    ) : CallListener {
        override fun onEvent(event: CallEvent) {
            observers.forEach { it(event) }
            channel.trySend(event)
        }
    }

    companion object {
        /**
         * The video codecs a phone offers, best first: H.264, which Android's and iOS's hardware
         * encoders favour (iOS cannot encode VP8 at all), at the level that holds the ladder's 1080p
         * rung; then VP8, which every browser has.
         */
        val PLATFORM_VIDEO_CODECS: List<VideoCodec> = listOf(VideoCodec.H264, VideoCodec.VP8)

        private fun withPlatformCodecs(options: CallOptions): CallOptions =
            if (options.videoCodecs.isNullOrEmpty()) options.copy(videoCodecs = PLATFORM_VIDEO_CODECS) else options

        /** Checks the link on the device (shape, expiry) and prepares the call. */
        @Throws(CallException::class)
        fun open(link: String, options: CallOptions = CallOptions()): TelevisitCall = TelevisitCall(link, options)

        /** Reads a link without the network: its server, appointment and expiry. */
        @Throws(CallException::class)
        fun inspect(link: String): LinkInfo = checkLink(link)
    }
}
