// Package destinations keeps the live set of destinations — those of the YAML file and those created over the
// API — and everything that changes it: config reloads, API create/patch/delete, enable/disable (by hand, by
// auto-disable, by a 410), secret rotation and test sends. It starts and replaces dispatcher lanes, hands
// intake a new routing table after every change, and emits the operator events sluice.destination.disabled and
// sluice.delivery.failed.
package destinations
