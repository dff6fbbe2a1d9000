package org.televisit.android

import org.junit.After
import org.junit.Assert.assertFalse
import org.junit.Assert.assertTrue
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.RobolectricTestRunner
import org.robolectric.RuntimeEnvironment
import org.televisit.TestVisit
import org.televisit.ffi.Call
import org.televisit.ffi.CallEvent
import org.televisit.ffi.CallListener
import org.televisit.ffi.CallOptions

/** The view on Robolectric's Choreographer with a real call's sink. */
@RunWith(RobolectricTestRunner::class)
class VideoViewTest {
    private val visit = TestVisit()
    private val call = Call(visit.patientLink, object : CallListener { override fun onEvent(event: CallEvent) {} }, CallOptions())

    @After
    fun close() {
        call.release()
        call.close()
        visit.close()
    }

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
