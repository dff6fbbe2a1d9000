package org.televisit.android

import android.Manifest
import android.annotation.SuppressLint
import android.content.Context
import android.content.pm.PackageManager
import android.graphics.ImageFormat
import android.hardware.camera2.CameraCaptureSession
import android.hardware.camera2.CameraCharacteristics
import android.hardware.camera2.CameraDevice
import android.hardware.camera2.CameraManager
import android.hardware.camera2.CaptureRequest
import android.media.Image
import android.media.ImageReader
import android.os.Handler
import android.os.HandlerThread
import android.util.Range
import org.televisit.ffi.VideoPicture
import org.televisit.ffi.VideoSource

/**
 * The phone's camera into the call: Camera2 with an `ImageReader` of `YUV_420_888` pictures, each
 * pushed into the core's [VideoSource] with the rotation that makes it upright and its capture
 * time; the core fits it to the ladder and encodes it. Needs the `CAMERA` permission
 * ([VisitPermissions]). [deviceRotation] is the screen's rotation in degrees (0, 90, 180, 270),
 * read for each picture so turning the phone turns the picture.
 */
class CameraCapture(
    context: Context,
    private val source: VideoSource,
    private val facing: Int = CameraCharacteristics.LENS_FACING_FRONT,
    private val width: Int = 1280,
    private val height: Int = 720,
    private val fps: Int = 30,
    private val deviceRotation: () -> Int = { 0 },
) {
    private val appContext = context.applicationContext
    private val cameras = appContext.getSystemService(CameraManager::class.java)
    private var thread: HandlerThread? = null
    private var device: CameraDevice? = null
    private var session: CameraCaptureSession? = null
    private var reader: ImageReader? = null

    /** Pictures pushed so far, and those the core refused (a bad picture is counted, never thrown). */
    @Volatile var picturesPushed = 0L
        private set
    @Volatile var picturesRefused = 0L
        private set

    /** The camera chosen for [facing], or null if the phone has none. */
    fun cameraId(): String? = cameras.cameraIdList.firstOrNull {
        cameras.getCameraCharacteristics(it).get(CameraCharacteristics.LENS_FACING) == facing
    }

    /** Opens the camera and starts pushing pictures; [onError] hears a camera that fails or goes away. */
    @SuppressLint("MissingPermission") // checked here, asked for by VisitPermissions
    fun start(onError: (String) -> Unit = {}) {
        check(appContext.checkSelfPermission(Manifest.permission.CAMERA) == PackageManager.PERMISSION_GRANTED) {
            "the CAMERA permission is not granted"
        }
        val id = cameraId() ?: return onError("no camera faces ${if (facing == CameraCharacteristics.LENS_FACING_FRONT) "the patient" else "away"}")
        val sensor = cameras.getCameraCharacteristics(id).get(CameraCharacteristics.SENSOR_ORIENTATION) ?: 0
        val handler = Handler(HandlerThread("televisit-camera").also { it.start(); thread = it }.looper)
        val images = ImageReader.newInstance(width, height, ImageFormat.YUV_420_888, 3).also { reader = it }
        images.setOnImageAvailableListener({ r ->
            r.acquireLatestImage()?.use { push(it, uprightRotation(sensor, deviceRotation(), facing)) }
        }, handler)
        cameras.openCamera(id, object : CameraDevice.StateCallback() {
            override fun onOpened(camera: CameraDevice) {
                device = camera
                startSession(camera, images, handler, onError)
            }

            override fun onDisconnected(camera: CameraDevice) {
                camera.close()
                onError("the camera was taken by another app")
            }

            override fun onError(camera: CameraDevice, error: Int) {
                camera.close()
                onError("the camera failed (error $error)")
            }
        }, handler)
    }

    /** Stops the camera; no picture is pushed after this returns. */
    fun stop() {
        session?.close()
        device?.close()
        reader?.close()
        thread?.quitSafely()
        session = null
        device = null
        reader = null
        thread = null
    }

    @Suppress("DEPRECATION") // the list-of-surfaces form is the one API 26 has
    private fun startSession(camera: CameraDevice, images: ImageReader, handler: Handler, onError: (String) -> Unit) {
        camera.createCaptureSession(listOf(images.surface), object : CameraCaptureSession.StateCallback() {
            override fun onConfigured(configured: CameraCaptureSession) {
                session = configured
                val request = camera.createCaptureRequest(CameraDevice.TEMPLATE_RECORD).apply {
                    addTarget(images.surface)
                    set(CaptureRequest.CONTROL_AE_TARGET_FPS_RANGE, Range(fps, fps))
                }
                configured.setRepeatingRequest(request.build(), null, handler)
            }

            override fun onConfigureFailed(failed: CameraCaptureSession) = onError("the camera refused $width x $height")
        }, handler)
    }

    private fun push(image: Image, rotation: Int) {
        val (w, h) = image.width to image.height
        val (cw, ch) = YuvPlanes.chromaSize(w, h)
        val p = image.planes
        val picture = VideoPicture(
            w.toUInt(), h.toUInt(),
            YuvPlanes.read(p[0].buffer, p[0].rowStride, p[0].pixelStride, w, h),
            YuvPlanes.read(p[1].buffer, p[1].rowStride, p[1].pixelStride, cw, ch),
            YuvPlanes.read(p[2].buffer, p[2].rowStride, p[2].pixelStride, cw, ch),
        )
        try {
            source.pushI420(picture, rotation, image.timestamp / 1000)
            picturesPushed++
        } catch (e: Exception) {
            picturesRefused++
        }
    }

    companion object {
        /**
         * How far clockwise a picture of a sensor mounted at [sensorOrientation] must turn to be
         * upright on a screen turned by [deviceRotation] (Camera2's documented formula; the front
         * camera's picture turns the other way, as in a mirror).
         */
        fun uprightRotation(sensorOrientation: Int, deviceRotation: Int, facing: Int): Int =
            if (facing == CameraCharacteristics.LENS_FACING_FRONT) (sensorOrientation + deviceRotation) % 360
            else (sensorOrientation - deviceRotation + 360) % 360
    }
}
