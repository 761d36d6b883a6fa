package console

import (
	"fmt"
	"html/template"
	"strings"
)

// chart draws a series as an SVG bar chart of deliveries per minute, delivered (green) stacked under failed
// attempts (red). Only numbers go into the markup, so it is safe to emit as template.HTML; colours come from
// classes in console.css (no style attributes: the CSP forbids them).
func chart(s Series) template.HTML {
	const w, h, bw = 240, 40, 4
	top := 1
	for i := range s.Delivered {
		if n := s.Delivered[i] + s.Failed[i]; n > top {
			top = n
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %d %d" width="%d" height="%d" preserveAspectRatio="none" role="img" aria-label="Deliveries per minute over the last hour: %d delivered, %d failed attempts, busiest minute %d">`,
		w, h+1, w, h+1, s.TotalDelivered(), s.TotalFailed(), top)
	fmt.Fprintf(&b, `<line class="axis" x1="0" y1="%d" x2="%d" y2="%d"/>`, h, w, h)
	for i := range s.Delivered {
		x := i * bw
		dh := s.Delivered[i] * h / top
		fh := s.Failed[i] * h / top
		if s.Delivered[i] > 0 && dh == 0 {
			dh = 1
		}
		if s.Failed[i] > 0 && fh == 0 {
			fh = 1
		}
		if dh > 0 {
			fmt.Fprintf(&b, `<rect class="ok" x="%d" y="%d" width="%d" height="%d"/>`, x, h-dh, bw-1, dh)
		}
		if fh > 0 {
			fmt.Fprintf(&b, `<rect class="bad" x="%d" y="%d" width="%d" height="%d"/>`, x, h-dh-fh, bw-1, fh)
		}
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}
