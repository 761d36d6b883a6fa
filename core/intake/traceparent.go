package intake

import "github.com/sluicehq/sluice/core/event"

// KeepTraceparent records the W3C trace context ev was published with, to be stored and forwarded to
// receivers: a CloudEvent's own traceparent extension (kept as ce_traceparent metadata) wins over the
// transport's (an HTTP traceparent header, an AMQP traceparent header), which applies to every event the request
// or message carries. An invalid value is dropped, never refused: tracing must not lose an event.
func KeepTraceparent(ev *event.Event, transport string) {
	for _, tp := range []string{ev.Metadata["ce_traceparent"], transport} {
		if event.ValidTraceparent(tp) {
			ev.Traceparent = tp
			return
		}
	}
}
