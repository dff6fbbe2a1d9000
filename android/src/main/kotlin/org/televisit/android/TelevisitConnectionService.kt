package org.televisit.android

import android.telecom.Connection
import android.telecom.ConnectionRequest
import android.telecom.ConnectionService
import android.telecom.DisconnectCause
import android.telecom.PhoneAccountHandle
import org.televisit.ffi.CallEvent

/**
 * Telecom's entry into the library (declared in its manifest): creates the [VisitConnection] of the
 * visit [VisitTelecom.start] placed, and reports a refusal back to the app.
 */
class TelevisitConnectionService : ConnectionService() {
    override fun onCreateOutgoingConnection(account: PhoneAccountHandle?, request: ConnectionRequest?): Connection {
        val (call, video) = ActiveVisit.current
            ?: return Connection.createFailedConnection(DisconnectCause(DisconnectCause.ERROR, "no visit to place"))
        val connection = VisitConnection(call, video)
        call.observe(connection::onCallEvent)
        connection.onCallEvent(CallEvent.StateChanged(call.state)) // it may have connected already
        return connection
    }

    override fun onCreateOutgoingConnectionFailed(account: PhoneAccountHandle?, request: ConnectionRequest?) {
        val (call, _) = ActiveVisit.current ?: return
        val refused = ActiveVisit.onRefused
        VisitTelecom.finish(applicationContext, call)
        refused?.invoke()
    }
}
