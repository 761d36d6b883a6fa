// Package destinations is the one lifecycle of every destination, whatever its source: the YAML file, the
// API (kept in the store, secrets sealed) and per-run subscriptions events carry (runs.go, handed over by
// intake through intake.Subscriptions). It builds every lane the same way (lanes.go: the sink behind the SSRF
// guard, the delivery policy from PolicyFor, the transform hook), gives intake a new routing table after every
// change, and handles what changes the set:
//
//   - manager.go: the state, startup, lookups and views;
//   - reload.go: config reloads;
//   - crud.go: API create, merge-patch, delete, enable and disable;
//   - rotate.go: signing-secret rotation and the expiry of rotated-out secrets;
//   - operator.go: auto-disable and 410 callbacks, and the operator events sluice.destination.disabled and
//     sluice.delivery.failed;
//   - ops.go: test sends, retry and replay.
//
// Lane changes are decided under the Manager's lock and carried out after it is released (queue.go), in order
// per destination name: stopping or replacing a lane waits for its attempts in flight.
//
// Refusals are *Error values whose Kind (ErrNotFound, ErrReadOnly, ErrConflict, ErrInvalid, ...) says why;
// core/api maps them to HTTP statuses. destinations must not import net/http (nor core/api).
//
// Must not import: net/http, core/api, plugins/host, core/store/embedded.
package destinations
