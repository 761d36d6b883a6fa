package console

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/sluicehq/sluice/core/api/authz"
	"github.com/sluicehq/sluice/core/seal"
	"github.com/sluicehq/sluice/core/store"
)

const eventPage = 50

// eventFilters are the Events page's query: topic, tenant, status, destination, since, until, cursor.
type eventFilters struct {
	Topic, Tenant, Status, Destination, Since, Until string
	Cursor                                           int64
	AskTenant                                        bool
	Names                                            []string // ids of the destinations the principal may filter by
}

type eventsPage struct {
	F          eventFilters
	Events     []store.EventSummary
	Deliveries []store.Delivery // when status or destination is given, the list is of deliveries
	ByDelivery bool
	Next       string // the query of the next page; "" on the last
	Error      string
}

func (c *Console) listEvents(w http.ResponseWriter, r *http.Request) {
	p := principalOf(r)
	q := r.URL.Query()
	f := eventFilters{Topic: strings.TrimSpace(q.Get("topic")), Tenant: strings.TrimSpace(q.Get("tenant")),
		Status: q.Get("status"), Destination: q.Get("destination"), Since: q.Get("since"), Until: q.Get("until"),
		AskTenant: p.Tenant == "", Names: c.visibleIDs(p)}
	page := eventsPage{F: f}
	since, err1 := parseFormTime(f.Since, "since")
	until, err2 := parseFormTime(f.Until, "until")
	if v := q.Get("cursor"); v != "" {
		f.Cursor, _ = c.opts.Numbers.Reveal(v, seal.KindCursor) // not one this console made: the first page
	}
	if err := errors.Join(err1, err2); err != nil {
		page.Error = err.Error()
		c.render(w, r, http.StatusBadRequest, "events", view{Title: "Events", Nav: "events", Data: page})
		return
	}
	next := func(cursor int64) string {
		v := url.Values{}
		for k, s := range map[string]string{"topic": f.Topic, "tenant": f.Tenant, "status": f.Status,
			"destination": f.Destination, "since": f.Since, "until": f.Until} {
			if s != "" {
				v.Set(k, s)
			}
		}
		v.Set("cursor", c.opts.Numbers.Hide(cursor, seal.KindCursor))
		return v.Encode()
	}
	if f.Status != "" || f.Destination != "" {
		// Deliveries, scoped as GET /v1/deliveries scopes them: to the principal's destinations.
		page.ByDelivery = true
		df := store.DeliveryFilter{EventID: "", Since: since, Until: until, Before: f.Cursor, Limit: eventPage + 1}
		if f.Status != "" {
			switch st := store.Status(f.Status); st {
			case store.Pending, store.Delivered, store.Failed, store.Skipped:
				df.Status = st
			default:
				page.Error = "status: must be pending, delivered, failed or skipped"
			}
		}
		scope := f.Names
		if f.Tenant != "" {
			scope = nil
			if authz.Sees(p, f.Tenant) {
				scope = c.opts.Destinations.IDs(f.Tenant)
			}
		}
		df.Destinations = []string{}
		for _, n := range scope {
			if f.Destination == "" || n == f.Destination {
				df.Destinations = append(df.Destinations, n)
			}
		}
		if p.Tenant == "" && f.Tenant == "" && f.Destination != "" && len(df.Destinations) == 0 {
			// A destination that is gone: its deliveries stay in the log, for tenant-less principals.
			df.Destinations = []string{f.Destination}
		}
		if page.Error == "" {
			rows, err := c.opts.Store.ListDeliveries(r.Context(), df)
			if err != nil {
				c.fail(w, r, err, 0, "")
				return
			}
			if len(rows) > eventPage {
				rows = rows[:eventPage]
				page.Next = next(rows[len(rows)-1].ID)
			}
			page.Deliveries = rows
		}
	} else {
		ef := store.EventFilter{Topic: f.Topic, Since: since, Until: until, Before: f.Cursor, Limit: eventPage + 1}
		if f.Tenant != "" {
			ef.Tenant, ef.TenantSet = f.Tenant, true
		}
		if p.Tenant != "" {
			if ef.TenantSet && ef.Tenant != p.Tenant {
				c.render(w, r, http.StatusOK, "events", view{Title: "Events", Nav: "events", Data: page})
				return
			}
			ef.Tenant, ef.TenantSet = p.Tenant, true
		}
		rows, err := c.opts.Store.ListEvents(r.Context(), ef)
		if err != nil {
			c.fail(w, r, err, 0, "")
			return
		}
		if len(rows) > eventPage {
			rows = rows[:eventPage]
			page.Next = next(rows[len(rows)-1].Seq)
		}
		page.Events = rows
	}
	status := http.StatusOK
	if page.Error != "" {
		status = http.StatusBadRequest
	}
	c.render(w, r, status, "events", view{Title: "Events", Nav: "events", Data: page})
}

type eventDetail struct {
	Rec        *store.EventRecord
	Data       string
	Deliveries []store.DeliveryRecord
	Retried    string
}

func (c *Console) showEvent(w http.ResponseWriter, r *http.Request) {
	p := principalOf(r)
	// Event ids are per tenant: a tenant principal reads its own tenant's; others may pick one with ?tenant=.
	var rec *store.EventRecord
	var err error
	switch t, set := r.URL.Query()["tenant"]; {
	case p.Tenant != "":
		rec, err = c.opts.Store.TenantEvent(r.Context(), p.Tenant, r.PathValue("id"))
	case set:
		rec, err = c.opts.Store.TenantEvent(r.Context(), t[0], r.PathValue("id"))
	default:
		rec, err = c.opts.Store.Event(r.Context(), r.PathValue("id"))
	}
	if err == nil && !authz.Sees(p, rec.Event.Tenant) {
		err = store.ErrNotFound
	}
	if err != nil {
		c.fail(w, r, err, 0, "")
		return
	}
	names := c.visibleIDs(p)
	d := eventDetail{Rec: rec, Data: prettyData(rec.Event.Data), Retried: r.URL.Query().Get("retried")}
	for _, dr := range rec.Deliveries {
		if c.sees(p, names, dr.Destination) {
			d.Deliveries = append(d.Deliveries, dr)
		}
	}
	c.render(w, r, http.StatusOK, "event", view{Title: "Event " + rec.Event.ID, Nav: "events", Data: d})
}

func prettyData(raw []byte) string {
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		return string(raw)
	}
	return out.String()
}

// live renders the live tail: the newest events now, then new ones over server-sent events.
func (c *Console) live(w http.ResponseWriter, r *http.Request) {
	p := principalOf(r)
	topic := strings.TrimSpace(r.URL.Query().Get("topic"))
	rows, err := c.opts.Store.ListEvents(r.Context(), scopedEvents(p, topic, 20))
	if err != nil {
		c.fail(w, r, err, 0, "")
		return
	}
	// The stream continues after the newest row shown, named by its event id (the store's sequence counts
	// every tenant's events, so it never leaves the server).
	q := url.Values{}
	if len(rows) > 0 {
		q.Set("after", rows[0].Event.ID)
	}
	if topic != "" {
		q.Set("topic", topic)
	}
	c.render(w, r, http.StatusOK, "live", view{Title: "Live tail", Nav: "live", Data: struct {
		Topic  string
		Events []store.EventSummary
		Stream string
	}{topic, rows, "/console/live/stream?" + q.Encode()}})
}

func scopedEvents(p authz.Principal, topic string, limit int) store.EventFilter {
	f := store.EventFilter{Topic: topic, Limit: limit}
	if p.Tenant != "" {
		f.Tenant, f.TenantSet = p.Tenant, true
	}
	return f
}

// liveStream sends each event stored after ?after= (tenant-scoped, topic-filtered) as an SSE "event" message
// holding one table row. It wakes when intake accepts events (Activity.Accepted) and looks at least every
// few seconds, so events stored by another node show up too.
func (c *Console) liveStream(w http.ResponseWriter, r *http.Request) {
	p := principalOf(r)
	topic := strings.TrimSpace(r.URL.Query().Get("topic"))
	afterID := r.URL.Query().Get("after")
	select {
	case <-c.closing:
		// Shutting down: 204 tells the SSE client not to reconnect.
		w.WriteHeader(http.StatusNoContent)
		return
	default:
	}
	rc := http.NewResponseController(w)
	// A stream outlives the server's write timeout by design; the client reconnects if it drops.
	_ = rc.SetWriteDeadline(time.Time{})
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(": live tail\n\n"))
	if err := rc.Flush(); err != nil {
		return
	}
	// Start after the event the page showed last; when it is no longer among the newest, from now.
	var after int64
	if afterID != "" {
		rows, err := c.opts.Store.ListEvents(r.Context(), scopedEvents(p, topic, 100))
		if err != nil {
			return
		}
		if len(rows) > 0 {
			after = rows[0].Seq
		}
		for _, row := range rows {
			if row.Event.ID == afterID {
				after = row.Seq
				break
			}
		}
	}
	row := c.pages["live"].Lookup("row")
	poll := time.NewTicker(3 * time.Second)
	defer poll.Stop()
	keepalive := time.Now()
	for {
		wake := c.opts.Activity.Wait()
		rows, err := c.opts.Store.ListEvents(r.Context(), scopedEvents(p, topic, 100))
		if err != nil {
			return
		}
		sent := false
		for i := len(rows) - 1; i >= 0; i-- {
			if rows[i].Seq <= after {
				continue
			}
			after = rows[i].Seq
			var b bytes.Buffer
			if err := row.Execute(&b, rows[i]); err != nil {
				c.log.Warn("console: live row", "err", err)
				return
			}
			var msg bytes.Buffer
			// No "id:" line: the store's sequence counts every tenant's events, which a tenant must not learn.
			msg.WriteString("event: event\n")
			for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
				msg.WriteString("data: " + line + "\n")
			}
			msg.WriteString("\n")
			if _, err := w.Write(msg.Bytes()); err != nil {
				return
			}
			sent = true
		}
		if !sent && time.Since(keepalive) > 15*time.Second {
			if _, err := w.Write([]byte(": keepalive\n\n")); err != nil {
				return
			}
			sent = true
		}
		if sent {
			keepalive = time.Now()
			if err := rc.Flush(); err != nil {
				return
			}
		}
		select {
		case <-r.Context().Done():
			return
		case <-c.closing:
			return
		case <-wake:
		case <-poll.C:
		}
	}
}
