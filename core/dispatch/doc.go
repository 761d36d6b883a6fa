// Package dispatch moves delivery rows to sinks: one lane per destination (so a slow or dead destination
// never delays another), a bounded number of in-flight attempts per lane, the retry schedule with jitter and
// Retry-After, and the outcome classes of the sink contract.
//
// Fresh deliveries arrive in memory from intake, already leased in the store; everything else — retries,
// overflow, work left by a crash — is claimed from the store by each lane's scanner. Pending work therefore
// lives in the store, and memory stays bounded by the lanes' queue sizes.
//
// May import: core/event, core/store, sinks, plugins/sdk/....
// Must not import: net/http, core/config, core/intake, core/destinations, core/api.
package dispatch
