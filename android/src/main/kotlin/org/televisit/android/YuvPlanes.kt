package org.televisit.android

import java.nio.ByteBuffer

/**
 * Copies between the core's I420 planes (tight: no row padding, one byte per sample) and the
 * strided planes Android hands out (`Image.Plane`: a row stride, and a pixel stride of 2 where
 * chroma is interleaved). Plain Java buffers, so the logic is tested on the JVM.
 */
object YuvPlanes {
    /** The `width × height` samples of a strided plane, tightly packed. */
    fun read(plane: ByteBuffer, rowStride: Int, pixelStride: Int, width: Int, height: Int): ByteArray {
        val out = ByteArray(width * height)
        val base = plane.position()
        for (row in 0 until height) {
            val start = base + row * rowStride
            if (pixelStride == 1) {
                plane.position(start)
                plane.get(out, row * width, width)
            } else {
                for (column in 0 until width) out[row * width + column] = plane.get(start + column * pixelStride)
            }
        }
        plane.position(base)
        return out
    }

    /** Writes tightly packed samples into a strided plane. */
    fun write(samples: ByteArray, plane: ByteBuffer, rowStride: Int, pixelStride: Int, width: Int, height: Int) {
        val base = plane.position()
        for (row in 0 until height) {
            val start = base + row * rowStride
            if (pixelStride == 1) {
                plane.position(start)
                plane.put(samples, row * width, width)
            } else {
                for (column in 0 until width) plane.put(start + column * pixelStride, samples[row * width + column])
            }
        }
        plane.position(base)
    }

    /** The size of the chroma planes of a `width × height` picture (half, rounded up). */
    fun chromaSize(width: Int, height: Int): Pair<Int, Int> = (width + 1) / 2 to (height + 1) / 2
}
