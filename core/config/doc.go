// Package config loads Sluice's YAML file: ${NAME} expansion from the environment, decoding with every unknown
// key and wrong type reported at its FILE:LINE:COL and path (through the one config walker that sink configs use
// too), validation that names the field and the fix, the masked view `validate --print` shows, and the watcher
// that reloads the file on change or SIGHUP.
//
// It describes what the gateway should be; it builds nothing and connects to nothing (the destinations package
// turns a Destination into a lane, serve wires the rest).
//
// May import: core/event, core/match, core/netguard, sinks, plugins/sdk/....
// Must not import: net/http, core/store, core/dispatch, core/intake, core/destinations, core/api.
package config
