// One process lifetime of an app: join with a patient link (argument 1), wait in the waiting
// room, close, exit. A crash at exit (a callback into a freed listener, a runtime torn down
// twice) fails scripts/test-ios, which runs this 20 times.
import Foundation
import Televisit

let call = try TelevisitCall(link: CommandLine.arguments[1])
_ = try await call.join()
for await event in call.events where event == .stateChanged(state: .waitingRoom) { break }
call.close()
print("shutdown-check: clean")
