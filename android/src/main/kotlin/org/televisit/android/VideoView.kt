package org.televisit.android

import android.content.Context
import android.graphics.Bitmap
import android.graphics.Color
import android.graphics.Rect
import android.view.Choreographer
import android.view.TextureView
import org.televisit.ffi.DecodedPicture
import org.televisit.ffi.VideoException
import org.televisit.ffi.VideoSink
import org.televisit.ffi.rgbaPixels
import java.nio.ByteBuffer

/**
 * Shows the peer's camera: on every display frame it takes the newest decoded picture from the
 * core's [VideoSink] and draws it, fitted and centred on black (letterboxed, never cropped: a
 * doctor must see all of what the patient shows). A software path through a bitmap; [attach] on
 * the main thread once the sink exists, [detach] when the call screen goes.
 */
class VideoView(context: Context) : TextureView(context) {
    private val frames = PictureFrames()
    private var sink: VideoSink? = null

    /** The size of the last picture drawn (0×0 before any), e.g. to lay out the call screen. */
    val pictureSize: Pair<Int, Int> get() = frames.size

    private val onFrame = object : Choreographer.FrameCallback {
        override fun doFrame(frameTimeNanos: Long) {
            if (showNewest()) Choreographer.getInstance().postFrameCallback(this)
        }
    }

    /** Whether it is drawing a sink's pictures (it stops by itself when the call is released). */
    val isShowing: Boolean get() = sink != null

    /** Starts drawing [sink]'s pictures. */
    fun attach(sink: VideoSink) {
        show(sink)
        Choreographer.getInstance().postFrameCallback(onFrame)
    }

    /** The sink [showNewest] takes pictures from ([attach] without the display's frames, for tests). */
    internal fun show(sink: VideoSink?) {
        this.sink = sink
    }

    /**
     * One display frame: draws the sink's newest picture, if a new one came. False once there is
     * nothing to show any more (detached, or the call was released: the last picture stays).
     */
    internal fun showNewest(): Boolean {
        val current = sink ?: return false
        try {
            frames.next(current)?.let(::draw)
        } catch (e: VideoException) {
            sink = null
            return false
        }
        return true
    }

    /** Stops drawing. */
    fun detach() {
        sink = null
        Choreographer.getInstance().removeFrameCallback(onFrame)
    }

    private fun draw(bitmap: Bitmap) {
        val canvas = lockCanvas() ?: return // no surface yet
        try {
            canvas.drawColor(Color.BLACK)
            canvas.drawBitmap(bitmap, null, fitted(bitmap.width, bitmap.height, width, height), null)
        } finally {
            unlockCanvasAndPost(canvas)
        }
    }

    companion object {
        /** Where a `pictureWidth × pictureHeight` picture goes in a view: as large as fits, centred. */
        fun fitted(pictureWidth: Int, pictureHeight: Int, viewWidth: Int, viewHeight: Int): Rect {
            if (pictureWidth <= 0 || pictureHeight <= 0) return Rect()
            val scale = minOf(viewWidth.toFloat() / pictureWidth, viewHeight.toFloat() / pictureHeight)
            val (w, h) = (pictureWidth * scale).toInt() to (pictureHeight * scale).toInt()
            val (left, top) = (viewWidth - w) / 2 to (viewHeight - h) / 2
            return Rect(left, top, left + w, top + h)
        }
    }
}

/** Turns a sink's newest picture into a bitmap, reusing it while the size stays. */
class PictureFrames {
    private var bitmap: Bitmap? = null

    /** The size of the last picture (0×0 before any). */
    var size: Pair<Int, Int> = 0 to 0
        private set

    /** The last picture taken, with its capture time for lip sync. */
    var last: DecodedPicture? = null
        private set

    /** The newest picture of [sink] as a bitmap; null if none came since the last call. */
    fun next(sink: VideoSink): Bitmap? {
        var newest: DecodedPicture? = null
        while (true) newest = sink.pull() ?: break
        return newest?.let(::bitmapOf)
    }

    /** [picture] as a bitmap. */
    fun bitmapOf(picture: DecodedPicture): Bitmap {
        val (w, h) = picture.picture.width.toInt() to picture.picture.height.toInt()
        val reused = bitmap?.takeIf { it.width == w && it.height == h }
            ?: Bitmap.createBitmap(w, h, Bitmap.Config.ARGB_8888).also { bitmap = it }
        reused.copyPixelsFromBuffer(ByteBuffer.wrap(rgbaPixels(picture.picture)))
        size = w to h
        last = picture
        return reused
    }
}
