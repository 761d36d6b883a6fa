// Package event defines the Event that flows through Sluice, its identifiers and its wire encodings.
//
// It is the one package every other layer shares, so it imports nothing of Sluice's own.
//
// May import: nothing of Sluice's.
// Must not import: net/http, os.
package event
