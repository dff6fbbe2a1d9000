package org.televisit.android

import android.app.Application
import android.telecom.Connection
import android.telecom.DisconnectCause
import android.telecom.TelecomManager
import kotlinx.coroutines.delay
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import org.junit.After
import org.junit.Assert.assertEquals
import org.junit.Assert.assertNull
import org.junit.Assert.assertTrue
import org.junit.Before
import org.junit.Test
import org.junit.runner.RunWith
import org.robolectric.Robolectric
import org.robolectric.RobolectricTestRunner
import org.robolectric.RuntimeEnvironment
import org.robolectric.Shadows.shadowOf
import org.robolectric.shadows.ShadowTelecomManager
import org.televisit.TelevisitCall
import org.televisit.TestVisit
import org.televisit.ffi.Role

/**
 * The visit through Android's Telecom (Robolectric's TelecomManager and the real framework
 * Connection) with a real call: a real server, the Rust library, `televisit join` as the doctor.
 */
@RunWith(RobolectricTestRunner::class)
class VisitTelecomTest {
    private val app: Application = RuntimeEnvironment.getApplication()
    private val telecom = shadowOf(app.getSystemService(TelecomManager::class.java))
    private lateinit var visit: TestVisit

    @Before
    fun setUp() {
        visit = TestVisit()
        telecom.setCallRequestMode(ShadowTelecomManager.CallRequestMode.MANUAL)
        telecom.setIsOutgoingCallPermitted(true) // Robolectric forbids by default
        telecom.setConnectionService(Robolectric.setupService(TelevisitConnectionService::class.java))
        VisitTelecom.register(app, "Televisit")
    }

    @After
    fun tearDown() {
        ActiveVisit.current?.first?.let { VisitTelecom.finish(app, it) }
        visit.close()
    }

    /** Telecom places the call: the connection it got from the library. */
    private fun placedConnection(): Connection =
        checkNotNull(telecom.allowOutgoingCall(telecom.lastOutgoingCall)) { "Telecom placed no connection" }

    private suspend fun awaitState(connection: Connection, state: Int) = withTimeout(30_000) {
        while (connection.state != state) delay(20)
    }

    @Test
    fun `dialing in the waiting room, active when connected, disconnected by the doctor's end`(): Unit = runBlocking {
        TelevisitCall.open(visit.patientLink).use { call ->
            assertEquals(TelecomStart.PLACED, VisitTelecom.start(app, call, video = true))
            assertEquals(VisitForegroundService::class.java.name, shadowOf(app).nextStartedService.component?.className)
            val connection = placedConnection()
            assertEquals(Connection.STATE_DIALING, connection.state)
            assertEquals(Connection.PROPERTY_SELF_MANAGED, connection.connectionProperties and Connection.PROPERTY_SELF_MANAGED)

            assertEquals(Role.PATIENT, call.join())
            delay(300)
            assertEquals("still dialing in the waiting room", Connection.STATE_DIALING, connection.state)
            val doctor = visit.headless(visit.doctorLink, "--seconds", "3")
            awaitState(connection, Connection.STATE_ACTIVE)

            awaitState(connection, Connection.STATE_DISCONNECTED)
            assertEquals(DisconnectCause.REMOTE, connection.disconnectCause.code)
            assertEquals(0, doctor.waitFor(20))
            assertNull("the process is free for the next visit", ActiveVisit.current)
            assertEquals(VisitForegroundService::class.java.name, shadowOf(app).nextStoppedService.component?.className)
        }
    }

    @Test
    fun `hanging up from the system (a headset button, a car) ends the call for the doctor too`(): Unit = runBlocking {
        TelevisitCall.open(visit.doctorLink).use { call ->
            assertEquals(TelecomStart.PLACED, VisitTelecom.start(app, call, video = false))
            val connection = placedConnection()
            call.join()
            val patient = visit.headless(visit.patientLink)
            awaitState(connection, Connection.STATE_ACTIVE)
            connection.onHold()
            assertEquals(Connection.STATE_HOLDING, connection.state)
            connection.onUnhold()
            assertEquals(Connection.STATE_ACTIVE, connection.state)

            connection.onDisconnect() // what Telecom calls for the system's hang-up
            assertEquals(DisconnectCause.LOCAL, connection.disconnectCause.code)
            assertEquals(0, patient.waitFor(20))
            assertTrue(patient.output(), patient.output().contains("ended: CallEnded { ended_by: Some(Doctor)"))
            withTimeout(10_000) { while (ActiveVisit.current != null) delay(20) }
        }
    }

    @Test
    fun `a refused or forbidden call says so and leaves the process free`(): Unit = runBlocking {
        TelevisitCall.open(visit.patientLink).use { call ->
            var refused = 0
            assertEquals(TelecomStart.PLACED, VisitTelecom.start(app, call, video = true) { refused++ })
            TelevisitCall.open(visit.doctorLink).use { second ->
                assertEquals(TelecomStart.ALREADY_IN_A_VISIT, VisitTelecom.start(app, second, video = true))
            }
            telecom.denyOutgoingCall(telecom.lastOutgoingCall)
            assertEquals(1, refused)
            assertNull(ActiveVisit.current)

            telecom.setIsOutgoingCallPermitted(false)
            assertEquals(TelecomStart.NOT_PERMITTED, VisitTelecom.start(app, call, video = true))
            assertNull(ActiveVisit.current)
        }
    }
}
