// Package console is Sluice's web console, served by the binary itself at /console/ on the API's port
// (core/api mounts it): html/template pages, a vendored htmx with its SSE extension and one stylesheet, all
// embedded (static/, templates/; static/VENDORED.md says where the JavaScript came from). Every page reads and
// works without JavaScript; htmx makes navigation, actions and the live tail smooth.
//
// Sign-in exchanges an API key of auth.keys for a server-side session (an HttpOnly, SameSite=Strict cookie
// holding a random id, expiring after console.session_ttl); every POST carries the session's CSRF token. A
// portal link (POST /v1/portal-links, signed with PortalKey) opens a session confined to one tenant.
//
// The console calls the same service layer as /v1 — the destinations.Manager, the store's lists, intake's
// catalog — and decides with the same rule (core/api/authz): a role that may not do something over /v1 may
// not do it here (and sees no button for it), and a tenant's session sees exactly what its key sees over /v1.
// The Content-Security-Policy allows no inline script or style; html/template escapes everything.
//
// It imports core/api/authz, core/config, core/destinations, core/intake, core/store and sinks; never
// core/api (which imports it).
//
// Must not import: plugins/host, core/store/embedded, core/store/postgres, core/api.
package console
