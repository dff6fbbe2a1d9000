package org.televisit.android

import android.graphics.Color
import android.graphics.Rect
import android.hardware.camera2.CameraCharacteristics
import android.media.MediaCodec
import android.media.MediaFormat
import org.junit.After
import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Assert.assertNotSame
import org.junit.Assert.assertSame
import org.junit.Assert.assertTrue
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.RobolectricTestRunner
import org.robolectric.shadows.ShadowMediaCodec
import org.televisit.ffi.DecodedPicture
import org.televisit.ffi.EncoderSettings
import org.televisit.ffi.VideoCodec
import org.televisit.ffi.VideoPicture
import org.televisit.ffi.testPatternPicture
import java.nio.ByteBuffer

/**
 * The video glue on Robolectric's MediaCodec, whose codecs are fakes: what the encoder and the
 * decoder ask of MediaCodec and make of its buffers; the camera's rotation; the view's bitmap.
 */
@RunWith(RobolectricTestRunner::class)
class VideoGlueTest {
    private val made = mutableListOf<MediaCodec>()

    @After
    fun clear() = ShadowMediaCodec.clearCodecs()

    /** A fake H.264 encoder: each picture becomes the IDR-or-P NAL unit its first luma byte says. */
    private fun fakeAvcEncoder() = ShadowMediaCodec.addEncoder(
        MediaFormat.MIMETYPE_VIDEO_AVC,
        ShadowMediaCodec.CodecConfig(640 * 360 * 3 / 2, 64) { input, output ->
            val luma = input.get(0)
            output.put(byteArrayOf(0, 0, 0, 1, if (luma == 0.toByte()) 0x65 else 0x41, luma))
            input.position(input.limit())
        },
    )

    private fun encoder() = MediaCodecVideoEncoder { mime -> MediaCodec.createEncoderByType(mime).also { made += it } }

    private fun picture(luma: Int, width: Int = 360, height: Int = 640): VideoPicture {
        val (cw, ch) = YuvPlanes.chromaSize(width, height)
        return VideoPicture(width.toUInt(), height.toUInt(), ByteArray(width * height) { luma.toByte() }, ByteArray(cw * ch) { 1 }, ByteArray(cw * ch) { 2 })
    }

    @Test
    fun `the encoder is configured from the ladder, follows the bitrate without a restart and restarts for a new size`() {
        fakeAvcEncoder()
        val encoder = encoder()
        encoder.configure(EncoderSettings(VideoCodec.H264, 360u, 640u, 30u, 600_000u))
        val format = made.single().inputFormat
        assertEquals(360, format.getInteger(MediaFormat.KEY_WIDTH))
        assertEquals(640, format.getInteger(MediaFormat.KEY_HEIGHT))
        assertEquals(600_000, format.getInteger(MediaFormat.KEY_BIT_RATE))
        assertEquals(30, format.getInteger(MediaFormat.KEY_FRAME_RATE))
        assertEquals(20, format.getInteger(MediaFormat.KEY_I_FRAME_INTERVAL))

        encoder.configure(EncoderSettings(VideoCodec.H264, 360u, 640u, 30u, 400_000u))
        assertEquals("a new bitrate goes to the running codec", 1, made.size)
        assertEquals(400_000uL, encoder.current?.bitrateBps)
        encoder.configure(EncoderSettings(VideoCodec.H264, 180u, 320u, 15u, 150_000u))
        assertEquals("a new size restarts it", 2, made.size)
        assertEquals(320, made.last().inputFormat.getInteger(MediaFormat.KEY_HEIGHT))
        encoder.release()
    }

    @Test
    fun `each picture comes back as the encoder's access unit, and a keyframe request does not break it`() {
        fakeAvcEncoder()
        val encoder = encoder()
        encoder.configure(EncoderSettings(VideoCodec.H264, 360u, 640u, 30u, 600_000u))
        val idr = encoder.encode(picture(0))!!
        assertArrayEquals(byteArrayOf(0, 0, 0, 1, 0x65, 0), idr.data)
        encoder.requestKeyframe()
        val p = encoder.encode(picture(7))!!
        assertArrayEquals(byteArrayOf(0, 0, 0, 1, 0x41, 7), p.data)
        encoder.release()
        assertEquals(null, encoder.current)
    }

    @Test
    fun `the decoder gives the codec's picture as I420`() {
        val (w, h) = 1280 to 720
        ShadowMediaCodec.addDecoder(
            MediaFormat.MIMETYPE_VIDEO_AVC,
            ShadowMediaCodec.CodecConfig(1024, w * h * 3 / 2) { input, output ->
                val first = input.get(input.position())
                input.position(input.limit())
                // Planar I420, the layout the fake's output format says: luma from the frame's first byte.
                output.put(ByteArray(w * h) { first }).put(ByteArray(w * h / 4) { 50 }).put(ByteArray(w * h / 4) { 60 })
            },
        )
        val decoder = MediaCodecVideoDecoder { mime -> MediaCodec.createDecoderByType(mime).also { made += it } }
        decoder.configure(VideoCodec.H264)
        val picture = decoder.decode(byteArrayOf(99, 1, 2))!!
        assertEquals(w.toUInt() to h.toUInt(), picture.width to picture.height)
        assertTrue(picture.y.all { it == 99.toByte() })
        assertTrue(picture.u.all { it == 50.toByte() } && picture.v.all { it == 60.toByte() })
        decoder.configure(VideoCodec.H264)
        assertNotSame("configure restarts the codec", made[0], made[1])
        decoder.release()
    }

    @Test
    fun `strided planes are read and written sample by sample`() {
        // A 3x2 chroma plane interleaved (pixel stride 2) in rows of 8 bytes, as NV12 cameras give.
        val plane = ByteBuffer.allocate(16)
        YuvPlanes.write(byteArrayOf(1, 2, 3, 4, 5, 6), plane, 8, 2, 3, 2)
        assertArrayEquals(byteArrayOf(1, 0, 2, 0, 3, 0, 0, 0, 4, 0, 5, 0, 6, 0, 0, 0), plane.array())
        assertArrayEquals(byteArrayOf(1, 2, 3, 4, 5, 6), YuvPlanes.read(plane, 8, 2, 3, 2))
        assertArrayEquals(byteArrayOf(1, 0, 2, 4, 0, 5), YuvPlanes.read(plane, 8, 1, 3, 2))
    }

    @Test
    fun `the camera's rotation follows the sensor and the screen, mirrored for the front camera`() {
        val front = CameraCharacteristics.LENS_FACING_FRONT
        val back = CameraCharacteristics.LENS_FACING_BACK
        // Typical phones: front sensor at 270°, back at 90°, held upright (screen rotation 0).
        assertEquals(270, CameraCapture.uprightRotation(270, 0, front))
        assertEquals(90, CameraCapture.uprightRotation(90, 0, back))
        // Turned to landscape (screen rotation 90): the pictures need a quarter less, the other way for the front.
        assertEquals(0, CameraCapture.uprightRotation(270, 90, front))
        assertEquals(0, CameraCapture.uprightRotation(90, 90, back))
    }

    @Test
    fun `the view letterboxes the whole picture and draws its colours`() {
        // 360×640 scaled by 426/640 is 239.6 wide: 239, centred.
        assertEquals("portrait into landscape", Rect(420, 0, 659, 426), VideoView.fitted(360, 640, 1080, 426))
        assertEquals(Rect(0, 0, 1280, 720), VideoView.fitted(640, 360, 1280, 720))
        assertEquals(Rect(), VideoView.fitted(0, 0, 100, 100))

        val frames = PictureFrames()
        val pattern = testPatternPicture(5u, 640u, 360u)
        val bitmap = frames.bitmapOf(DecodedPicture(pattern, null, null))
        assertEquals(640 to 360, frames.size)
        // Below the counter band the pattern starts with its white bar, at the left edge.
        val white = bitmap.getPixel(2, 200)
        assertTrue("white: ${Integer.toHexString(white)}", Color.red(white) > 230 && Color.green(white) > 230 && Color.blue(white) > 230)
        assertSame("the bitmap is reused at the same size", bitmap, frames.bitmapOf(DecodedPicture(pattern, null, null)))
    }
}
