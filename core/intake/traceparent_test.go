package intake

import (
	"testing"

	"github.com/sluicehq/sluice/core/event"
)

func TestKeepTraceparent(t *testing.T) {
	const a = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	const b = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
	for _, tt := range []struct {
		ext, transport, want string
	}{
		{"", "", ""},
		{"", a, a},
		{b, a, b},
		{"garbage", a, a},
		{"", "00-00000000000000000000000000000000-00f067aa0ba902b7-01", ""}, // zero trace id
		{"", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", ""}, // uppercase
		{"", a + "-extra", ""},
	} {
		ev := event.Event{Metadata: map[string]string{}}
		if tt.ext != "" {
			ev.Metadata["ce_traceparent"] = tt.ext
		}
		KeepTraceparent(&ev, tt.transport)
		if ev.Traceparent != tt.want {
			t.Errorf("ext %q transport %q: kept %q, want %q", tt.ext, tt.transport, ev.Traceparent, tt.want)
		}
	}
}
