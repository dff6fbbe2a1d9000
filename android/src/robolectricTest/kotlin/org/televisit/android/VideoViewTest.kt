package org.televisit.android

import org.junit.After
import org.junit.Assert.assertFalse
import org.junit.Assert.assertTrue
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.RobolectricTestRunner
import org.robolectric.RuntimeEnvironment
import org.televisit.PatientCall

/** The view on Robolectric's Choreographer with a real call's sink. */
@RunWith(RobolectricTestRunner::class)
class VideoViewTest {
    private val patient = PatientCall()
    private val call = patient.call

    @After
    fun close() = patient.close()

    @Test
    fun `a released call stops the view on the next frame instead of crashing the app`() {
        // Display frames are driven by hand: Robolectric's Choreographer runs a self-reposting
        // frame callback without end.
        val view = VideoView(RuntimeEnvironment.getApplication())
        assertFalse("no sink: nothing to show", view.showNewest())
        view.show(call.videoSink(null))
        assertTrue("a frame with no new picture keeps showing", view.showNewest())
        assertTrue(view.isShowing)
        call.release()
        assertFalse("the released call's sink refuses: the view stops", view.showNewest())
        assertFalse(view.isShowing)
    }
}
