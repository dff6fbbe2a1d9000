package org.televisit.android

import android.media.MediaCodec
import android.media.MediaCodecInfo
import android.media.MediaFormat
import android.os.Build
import android.os.Bundle
import org.televisit.ffi.EncodedVideo
import org.televisit.ffi.EncoderSettings
import org.televisit.ffi.PlatformVideoDecoder
import org.televisit.ffi.PlatformVideoEncoder
import org.televisit.ffi.VideoCodec
import org.televisit.ffi.VideoException
import org.televisit.ffi.VideoPicture
import java.nio.ByteBuffer

/** MediaCodec's name for a codec. */
internal fun mimeOf(codec: VideoCodec): String = when (codec) {
    VideoCodec.H264 -> MediaFormat.MIMETYPE_VIDEO_AVC
    VideoCodec.VP8 -> MediaFormat.MIMETYPE_VIDEO_VP8
}

/** How long an encode or decode waits for MediaCodec's buffers: about a frame. */
private const val WAIT_US = 30_000L

/** The core's longest time between keyframes, seconds (it asks for keyframes when they are needed). */
private const val KEYFRAME_INTERVAL_SECONDS = 20

/**
 * The phone's hardware video encoder for the core's video engine: `call.videoSource(MediaCodecVideoEncoder())`.
 * The core calls [configure] before the first picture and whenever the ladder moves (a new size or
 * frame rate restarts the codec; a new bitrate goes to the running one), [requestKeyframe] when the
 * peer lost the picture, and [encode] for each upright I420 picture, on its encoder thread. H.264
 * comes out in Annex-B form with the codec-config buffer (SPS/PPS) first; the core puts the
 * parameter sets in front of each IDR. [createCodec] is for tests.
 */
class MediaCodecVideoEncoder(
    private val createCodec: (mime: String) -> MediaCodec = { MediaCodec.createEncoderByType(it) },
) : PlatformVideoEncoder {
    private var codec: MediaCodec? = null
    private var settings: EncoderSettings? = null
    private var frames = 0L
    private val info = MediaCodec.BufferInfo()

    /** What the running codec was configured with (null before [configure] and after [release]). */
    val current: EncoderSettings? @Synchronized get() = settings

    @Synchronized
    override fun configure(settings: EncoderSettings) {
        val running = codec
        val old = this.settings
        if (running != null && old != null && old.copy(bitrateBps = settings.bitrateBps) == settings) {
            if (old.bitrateBps != settings.bitrateBps) {
                running.setParameters(Bundle().apply { putInt(MediaCodec.PARAMETER_KEY_VIDEO_BITRATE, settings.bitrateBps.toInt()) })
            }
            this.settings = settings
            return
        }
        release()
        val made = try {
            createCodec(mimeOf(settings.codec))
        } catch (e: Exception) {
            throw VideoException.NoCodec("no ${settings.codec} encoder on this phone: ${e.message}")
        }
        try {
            made.configure(formatFor(settings), null, null, MediaCodec.CONFIGURE_FLAG_ENCODE)
            made.start()
        } catch (e: Exception) {
            made.release()
            throw VideoException.Codec("the ${settings.codec} encoder refused ${settings.width}x${settings.height}: ${e.message}")
        }
        codec = made
        this.settings = settings
        frames = 0
    }

    @Synchronized
    override fun requestKeyframe() {
        codec?.setParameters(Bundle().apply { putInt(MediaCodec.PARAMETER_KEY_REQUEST_SYNC_FRAME, 0) })
    }

    @Synchronized
    override fun encode(picture: VideoPicture): EncodedVideo? {
        val codec = codec ?: throw VideoException.Codec("a picture before the encoder was configured")
        val fps = settings?.fps?.toLong()?.coerceAtLeast(1) ?: 30
        val index = codec.dequeueInputBuffer(WAIT_US)
        if (index >= 0) { // else the encoder is behind: this picture is skipped
            val size = writeInput(codec, index, picture)
            codec.queueInputBuffer(index, 0, size, frames++ * 1_000_000L / fps, 0)
        }
        return drain(codec)
    }

    /** Stops and frees the codec (the next [configure] makes a new one). */
    @Synchronized
    fun release() {
        codec?.let {
            runCatching { it.stop() }
            it.release()
        }
        codec = null
        settings = null
    }

    /** The next frame the encoder has ready, with any codec-config buffer before it. */
    private fun drain(codec: MediaCodec): EncodedVideo? {
        var data: ByteArray? = null
        var keyframe = false
        while (true) {
            val index = codec.dequeueOutputBuffer(info, if (data == null) WAIT_US else 0)
            if (index == MediaCodec.INFO_OUTPUT_FORMAT_CHANGED) continue
            if (index < 0) break
            val buffer = codec.getOutputBuffer(index) ?: break
            val bytes = ByteArray(info.size)
            buffer.position(info.offset)
            buffer.get(bytes)
            codec.releaseOutputBuffer(index, false)
            data = if (data == null) bytes else data + bytes
            keyframe = keyframe || info.flags and MediaCodec.BUFFER_FLAG_KEY_FRAME != 0
            if (info.flags and MediaCodec.BUFFER_FLAG_CODEC_CONFIG == 0) break
        }
        return data?.let { EncodedVideo(it, keyframe) }
    }

    private fun writeInput(codec: MediaCodec, index: Int, picture: VideoPicture): Int {
        val (w, h) = picture.width.toInt() to picture.height.toInt()
        val (cw, ch) = YuvPlanes.chromaSize(w, h)
        val image = codec.getInputImage(index)
        if (image != null) { // the flexible YUV layout the encoder chose: its strides say where
            val planes = image.planes
            YuvPlanes.write(picture.y, planes[0].buffer, planes[0].rowStride, planes[0].pixelStride, w, h)
            YuvPlanes.write(picture.u, planes[1].buffer, planes[1].rowStride, planes[1].pixelStride, cw, ch)
            YuvPlanes.write(picture.v, planes[2].buffer, planes[2].rowStride, planes[2].pixelStride, cw, ch)
            return w * h + 2 * cw * ch
        }
        val buffer = codec.getInputBuffer(index) ?: throw VideoException.Codec("the encoder gave no input buffer")
        buffer.clear()
        buffer.put(picture.y).put(picture.u).put(picture.v)
        return buffer.position()
    }

    private fun formatFor(settings: EncoderSettings): MediaFormat =
        MediaFormat.createVideoFormat(mimeOf(settings.codec), settings.width.toInt(), settings.height.toInt()).apply {
            setInteger(MediaFormat.KEY_COLOR_FORMAT, MediaCodecInfo.CodecCapabilities.COLOR_FormatYUV420Flexible)
            setInteger(MediaFormat.KEY_BIT_RATE, settings.bitrateBps.toInt())
            setInteger(MediaFormat.KEY_FRAME_RATE, settings.fps.toInt())
            setInteger(MediaFormat.KEY_I_FRAME_INTERVAL, KEYFRAME_INTERVAL_SECONDS)
            setInteger(MediaFormat.KEY_BITRATE_MODE, MediaCodecInfo.EncoderCapabilities.BITRATE_MODE_CBR)
            setInteger(MediaFormat.KEY_PRIORITY, 0) // real time
            if (Build.VERSION.SDK_INT >= 30) setInteger(MediaFormat.KEY_LATENCY, 1)
            if (settings.codec == VideoCodec.H264) { // what the core offers: constrained baseline, level 4.0 (1080p)
                setInteger(MediaFormat.KEY_PROFILE, MediaCodecInfo.CodecProfileLevel.AVCProfileConstrainedBaseline)
                setInteger(MediaFormat.KEY_LEVEL, MediaCodecInfo.CodecProfileLevel.AVCLevel4)
            }
        }
}

/**
 * The phone's hardware video decoder for the core's video engine: `call.videoSink(MediaCodecVideoDecoder())`.
 * [configure] (re)starts it for the peer's codec; [decode] takes one frame and returns the picture
 * MediaCodec has ready, as I420 (whatever YUV layout the codec writes). [createCodec] is for tests.
 */
class MediaCodecVideoDecoder(
    private val createCodec: (mime: String) -> MediaCodec = { MediaCodec.createDecoderByType(it) },
) : PlatformVideoDecoder {
    private var codec: MediaCodec? = null
    private var frames = 0L
    private val info = MediaCodec.BufferInfo()

    @Synchronized
    override fun configure(codec: VideoCodec) {
        release()
        val made = try {
            createCodec(mimeOf(codec))
        } catch (e: Exception) {
            throw VideoException.NoCodec("no $codec decoder on this phone: ${e.message}")
        }
        // The size is a hint: the stream's own headers decide.
        val format = MediaFormat.createVideoFormat(mimeOf(codec), 1280, 720).apply {
            setInteger(MediaFormat.KEY_COLOR_FORMAT, MediaCodecInfo.CodecCapabilities.COLOR_FormatYUV420Flexible)
            setInteger(MediaFormat.KEY_PRIORITY, 0)
        }
        try {
            made.configure(format, null, null, 0)
            made.start()
        } catch (e: Exception) {
            made.release()
            throw VideoException.Codec("the $codec decoder refused to start: ${e.message}")
        }
        this.codec = made
    }

    @Synchronized
    override fun decode(data: ByteArray): VideoPicture? {
        val codec = codec ?: throw VideoException.Codec("a frame before the decoder was configured")
        val input = codec.dequeueInputBuffer(WAIT_US)
        if (input < 0) throw VideoException.Codec("the decoder is stuck: no input buffer")
        val buffer = codec.getInputBuffer(input) ?: throw VideoException.Codec("the decoder gave no input buffer")
        buffer.clear()
        buffer.put(data)
        codec.queueInputBuffer(input, 0, data.size, frames++ * 33_333, 0)
        while (true) {
            val index = codec.dequeueOutputBuffer(info, WAIT_US)
            if (index == MediaCodec.INFO_OUTPUT_FORMAT_CHANGED) continue
            if (index < 0) return null
            try {
                return picture(codec, index)
            } finally {
                codec.releaseOutputBuffer(index, false)
            }
        }
    }

    /** Stops and frees the codec. */
    @Synchronized
    fun release() {
        codec?.let {
            runCatching { it.stop() }
            it.release()
        }
        codec = null
    }

    private fun picture(codec: MediaCodec, index: Int): VideoPicture {
        val image = codec.getOutputImage(index)
        if (image != null) {
            val (w, h) = image.width to image.height
            val (cw, ch) = YuvPlanes.chromaSize(w, h)
            val p = image.planes
            return VideoPicture(
                w.toUInt(), h.toUInt(),
                YuvPlanes.read(p[0].buffer, p[0].rowStride, p[0].pixelStride, w, h),
                YuvPlanes.read(p[1].buffer, p[1].rowStride, p[1].pixelStride, cw, ch),
                YuvPlanes.read(p[2].buffer, p[2].rowStride, p[2].pixelStride, cw, ch),
            )
        }
        // No Image API for this buffer: read it by the output format (planar or semi-planar).
        val format = codec.outputFormat
        val w = format.getInteger(MediaFormat.KEY_WIDTH)
        val h = format.getInteger(MediaFormat.KEY_HEIGHT)
        val stride = if (format.containsKey(MediaFormat.KEY_STRIDE)) format.getInteger(MediaFormat.KEY_STRIDE) else w
        val rows = if (format.containsKey(MediaFormat.KEY_SLICE_HEIGHT)) format.getInteger(MediaFormat.KEY_SLICE_HEIGHT).coerceAtLeast(h) else h
        val colorFormat = format.getInteger(MediaFormat.KEY_COLOR_FORMAT)
        val buffer: ByteBuffer = (codec.getOutputBuffer(index) ?: throw VideoException.Codec("no output buffer")).apply { position(info.offset) }
        val (cw, ch) = YuvPlanes.chromaSize(w, h)
        val y = YuvPlanes.read(buffer.slice(), stride, 1, w, h)
        val chroma = buffer.duplicate().apply { position(info.offset + stride * rows) }.slice()
        return if (colorFormat == MediaCodecInfo.CodecCapabilities.COLOR_FormatYUV420SemiPlanar) {
            val u = YuvPlanes.read(chroma, stride, 2, cw, ch)
            val v = YuvPlanes.read(chroma.duplicate().apply { position(1) }.slice(), stride, 2, cw, ch)
            VideoPicture(w.toUInt(), h.toUInt(), y, u, v)
        } else {
            val chromaStride = (stride + 1) / 2
            val u = YuvPlanes.read(chroma, chromaStride, 1, cw, ch)
            val v = YuvPlanes.read(chroma.duplicate().apply { position(chromaStride * ((rows + 1) / 2)) }.slice(), chromaStride, 1, cw, ch)
            VideoPicture(w.toUInt(), h.toUInt(), y, u, v)
        }
    }
}
