package org.televisit.android

import android.Manifest
import android.annotation.SuppressLint
import android.content.Context
import android.content.pm.PackageManager
import android.media.AudioAttributes
import android.media.AudioFormat
import android.media.AudioRecord
import android.media.AudioTrack
import android.media.MediaRecorder
import android.media.audiofx.AcousticEchoCanceler
import android.media.audiofx.NoiseSuppressor
import org.televisit.ffi.AudioSink
import org.televisit.ffi.AudioSource

/** 10 ms of 48 kHz mono 16-bit PCM, the core's audio frame. */
private const val FRAME_BYTES = 960

/**
 * The phone's microphone and speaker for the call: `AudioRecord` with the voice-communication
 * source (the platform's echo canceller and noise suppressor on where the phone has them) pushing
 * 10 ms frames into the core's [AudioSource], and an `AudioTrack` for voice calls playing the 10 ms
 * frames pulled from its [AudioSink] (jitter buffer, loss concealment and Opus are in the core).
 * Each runs on a thread of its own. Needs the `RECORD_AUDIO` permission ([VisitPermissions]); the
 * route (earpiece, speaker, headset) is [AudioRouter]'s.
 */
class VoiceAudio(context: Context, private val source: AudioSource, private val sink: AudioSink) {
    private val appContext = context.applicationContext
    @Volatile private var running = false
    private var threads: List<Thread> = emptyList()

    /** 10 ms frames captured and pushed, and frames pulled and played, so far. */
    @Volatile var framesCaptured = 0L
        private set
    @Volatile var framesPlayed = 0L
        private set

    /** Whether capture and playout run (they stop by themselves when the call is released). */
    val isRunning: Boolean get() = running && threads.any { it.isAlive }

    /** Whether the platform's echo canceller is on for the microphone (false where the phone has none). */
    @Volatile var echoCancelling = false
        private set

    /** Starts capture and playout. */
    @SuppressLint("MissingPermission") // checked here, asked for by VisitPermissions
    fun start() {
        if (running) return
        check(appContext.checkSelfPermission(Manifest.permission.RECORD_AUDIO) == PackageManager.PERMISSION_GRANTED) {
            "the RECORD_AUDIO permission is not granted"
        }
        running = true
        threads = listOf(Thread(::capture, "televisit-microphone"), Thread(::playout, "televisit-speaker"))
        threads.forEach { it.priority = Thread.MAX_PRIORITY; it.start() }
    }

    /** Stops both; no frame is pushed or pulled after this returns. */
    fun stop() {
        running = false
        threads.forEach { it.join(1_000) }
        threads = emptyList()
    }

    @SuppressLint("MissingPermission")
    private fun capture() {
        val minimum = AudioRecord.getMinBufferSize(48_000, AudioFormat.CHANNEL_IN_MONO, AudioFormat.ENCODING_PCM_16BIT)
        val record = AudioRecord(
            MediaRecorder.AudioSource.VOICE_COMMUNICATION, 48_000, AudioFormat.CHANNEL_IN_MONO,
            AudioFormat.ENCODING_PCM_16BIT, maxOf(minimum, 4 * FRAME_BYTES),
        )
        val effects = listOfNotNull(
            if (AcousticEchoCanceler.isAvailable()) AcousticEchoCanceler.create(record.audioSessionId) else null,
            if (NoiseSuppressor.isAvailable()) NoiseSuppressor.create(record.audioSessionId) else null,
        )
        effects.forEach { it.enabled = true }
        echoCancelling = effects.any { it is AcousticEchoCanceler && it.enabled }
        try {
            record.startRecording()
            val frame = ByteArray(FRAME_BYTES)
            while (running) {
                var filled = 0
                while (running && filled < FRAME_BYTES) {
                    val read = record.read(frame, filled, FRAME_BYTES - filled)
                    if (read < 0) return
                    filled += read
                }
                if (filled == FRAME_BYTES) {
                    source.push(frame.copyOf())
                    framesCaptured++
                }
            }
        } catch (e: Exception) {
            running = false // the call was released: its source refuses
        } finally {
            effects.forEach { it.release() }
            runCatching { record.stop() }
            record.release()
        }
    }

    private fun playout() {
        val minimum = AudioTrack.getMinBufferSize(48_000, AudioFormat.CHANNEL_OUT_MONO, AudioFormat.ENCODING_PCM_16BIT)
        val track = AudioTrack.Builder()
            .setAudioAttributes(
                AudioAttributes.Builder()
                    .setUsage(AudioAttributes.USAGE_VOICE_COMMUNICATION)
                    .setContentType(AudioAttributes.CONTENT_TYPE_SPEECH)
                    .build(),
            )
            .setAudioFormat(
                AudioFormat.Builder().setSampleRate(48_000).setChannelMask(AudioFormat.CHANNEL_OUT_MONO)
                    .setEncoding(AudioFormat.ENCODING_PCM_16BIT).build(),
            )
            .setBufferSizeInBytes(maxOf(minimum, 4 * FRAME_BYTES))
            .setTransferMode(AudioTrack.MODE_STREAM)
            .build()
        try {
            track.play()
            while (running) {
                // A blocking write paces the loop at the speaker's rate: one 10 ms frame at a time.
                val frame = sink.pull()
                if (track.write(frame, 0, frame.size) < 0) return
                framesPlayed++
            }
        } catch (e: Exception) {
            running = false
        } finally {
            runCatching { track.stop() }
            track.release()
        }
    }
}
