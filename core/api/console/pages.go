package console

import (
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/sluicehq/sluice/core/api/authz"
	"github.com/sluicehq/sluice/core/destinations"
	"github.com/sluicehq/sluice/core/seal"
	"github.com/sluicehq/sluice/core/store"
)

// Every page asks the same service layer as /v1 and scopes by the session's principal exactly as the /v1
// handlers do: a tenant's session lists its own tenant's things only, and another tenant's id is "not found".

// visibleIDs are the ids of the destinations p may see: the delivery log follows ids, never names.
func (c *Console) visibleIDs(p authz.Principal) []string {
	return c.opts.Destinations.IDs(p.Tenant)
}

// sees reports whether p may see deliveries to destination name (the same rule as GET /v1/deliveries/{id}).
func (c *Console) sees(p authz.Principal, names []string, name string) bool {
	return p.Tenant == "" || slices.Contains(names, name)
}

type destRow struct {
	V         destinations.View
	Pending   int64
	Hour      Series
	Chart     template.HTML
	LastError string
	LastAt    time.Time
}

func (c *Console) overview(w http.ResponseWriter, r *http.Request) {
	p := principalOf(r)
	pending, err := c.opts.Store.PendingCounts(r.Context())
	if err != nil {
		c.fail(w, r, err, 0, "")
		return
	}
	var rows []destRow
	var total destRow
	for _, v := range c.opts.Destinations.List(p.Tenant) {
		row := destRow{V: v, Pending: pending[v.ID], Hour: c.opts.Activity.Hour(v.ID)}
		row.Chart = chart(row.Hour)
		recent, err := c.opts.Store.ListDeliveries(r.Context(), store.DeliveryFilter{Destinations: []string{v.ID}, Limit: 20})
		if err == nil {
			for _, d := range recent {
				if d.LastError != "" && d.Status != store.Delivered {
					row.LastError, row.LastAt = d.LastError, d.UpdatedAt
					break
				}
			}
		}
		total.Pending += row.Pending
		for i := range row.Hour.Delivered {
			total.Hour.Delivered[i] += row.Hour.Delivered[i]
			total.Hour.Failed[i] += row.Hour.Failed[i]
		}
		rows = append(rows, row)
	}
	total.Chart = chart(total.Hour)
	c.render(w, r, http.StatusOK, "overview", view{Title: "Overview", Nav: "overview", Data: struct {
		Rows  []destRow
		Total destRow
	}{rows, total}})
}

func (c *Console) listDestinations(w http.ResponseWriter, r *http.Request) {
	views := c.opts.Destinations.List(principalOf(r).Tenant)
	c.render(w, r, http.StatusOK, "destinations", view{Title: "Destinations", Nav: "destinations", Data: views})
}

type destPage struct {
	V          destinations.View
	Spec       string
	Deliveries []store.Delivery
	Flash      string
}

func (c *Console) showDestination(w http.ResponseWriter, r *http.Request) {
	p := principalOf(r)
	v, err := c.opts.Destinations.Get(r.PathValue("id"), p.Tenant)
	if err != nil {
		c.fail(w, r, err, 0, "")
		return
	}
	spec, _ := json.MarshalIndent(v, "", "  ")
	ds, err := c.opts.Store.ListDeliveries(r.Context(), store.DeliveryFilter{Destinations: []string{v.ID}, Limit: 25})
	if err != nil {
		c.fail(w, r, err, 0, "")
		return
	}
	flash := ""
	switch r.URL.Query().Get("done") {
	case "enabled":
		flash = "Enabled: new events reach this destination again."
	case "disabled":
		flash = "Disabled: its pending deliveries were skipped; enable it to resume."
	case "saved":
		flash = "Saved."
	}
	c.render(w, r, http.StatusOK, "destination", view{Title: v.Name, Nav: "destinations",
		Data: destPage{V: v, Spec: string(spec), Deliveries: ds, Flash: flash}})
}

func (c *Console) newDestination(w http.ResponseWriter, r *http.Request) {
	p := principalOf(r)
	f := &destForm{Types: c.opts.Sinks.Types(), Type: r.URL.Query().Get("type"), AskTenant: p.Tenant == "", Enabled: true}
	if f.Type == "" || !slices.Contains(f.Types, f.Type) {
		f.Type = "webhook"
		if !slices.Contains(f.Types, f.Type) && len(f.Types) > 0 {
			f.Type = f.Types[0]
		}
	}
	f.Fields, f.TypeDoc = fieldsOf(c.opts.Sinks, f.Type, nil)
	c.render(w, r, http.StatusOK, "form", view{Title: "New destination", Nav: "destinations", Data: f})
}

func (c *Console) createDestination(w http.ResponseWriter, r *http.Request) {
	p := principalOf(r)
	f := &destForm{Types: c.opts.Sinks.Types(), AskTenant: p.Tenant == ""}
	spec, err := readForm(r, f, c.opts.Sinks, nil)
	if err != nil {
		var fe *fieldError
		if errors.As(err, &fe) {
			f.markError(fe.field, fe.Error())
		}
		c.render(w, r, http.StatusUnprocessableEntity, "form", view{Title: "New destination", Nav: "destinations", Data: f})
		return
	}
	body, _ := json.Marshal(spec)
	v, err := c.opts.Destinations.Create(r.Context(), body, p.Tenant)
	if err != nil {
		c.formError(w, r, f, err, "New destination")
		return
	}
	cfg, _ := v.Spec["config"].(map[string]any)
	if list, _ := cfg["secrets"].([]any); len(list) == 1 && strings.TrimSpace(r.PostFormValue("cfg.secrets")) == "" {
		// Sluice generated the signing secret: show it in full, this once.
		secret, _ := list[0].(string)
		c.render(w, r, http.StatusCreated, "secret", view{Title: "Destination created", Nav: "destinations",
			Data: struct {
				V       destinations.View
				Secret  string
				Created bool
			}{v, secret, true}})
		return
	}
	http.Redirect(w, r, "/console/destinations/"+v.ID+"?done=saved", http.StatusSeeOther)
}

// formError shows the form again with the service's refusal; a forbidden or missing destination is the
// error page instead.
func (c *Console) formError(w http.ResponseWriter, r *http.Request, f *destForm, err error, title string) {
	status, msg := describeError(err)
	if status == http.StatusNotFound || status == http.StatusForbidden || status >= 500 {
		c.fail(w, r, err, status, msg)
		return
	}
	var de *destinations.Error
	field := ""
	if errors.As(err, &de) {
		field, msg = de.Field, de.Msg
		if field != "" {
			msg = field + ": " + msg
		}
	}
	f.markError(field, msg)
	c.render(w, r, status, "form", view{Title: title, Nav: "destinations", Data: f})
}

func (c *Console) editForm(r *http.Request, v destinations.View) *destForm {
	f := &destForm{Edit: true, ID: v.ID, Types: []string{v.Type}, Type: v.Type, Name: v.Name, Tenant: v.Tenant, Enabled: v.Enabled}
	if t, ok := v.Spec["topics"].([]any); ok {
		parts := make([]string, 0, len(t))
		for _, x := range t {
			s, _ := x.(string)
			parts = append(parts, s)
		}
		f.Topics = strings.Join(parts, ", ")
	}
	if fl, ok := v.Spec["filter"]; ok && fl != nil {
		b, _ := json.MarshalIndent(fl, "", "  ")
		f.Filter = string(b)
	}
	f.Transform, _ = v.Spec["transform"].(string)
	cfg, _ := v.Spec["config"].(map[string]any)
	f.Fields, f.TypeDoc = fieldsOf(c.opts.Sinks, v.Type, cfg)
	return f
}

func (c *Console) editDestination(w http.ResponseWriter, r *http.Request) {
	v, err := c.opts.Destinations.Get(r.PathValue("id"), principalOf(r).Tenant)
	if err != nil {
		c.fail(w, r, err, 0, "")
		return
	}
	c.render(w, r, http.StatusOK, "form", view{Title: "Edit " + v.Name, Nav: "destinations", Data: c.editForm(r, v)})
}

func (c *Console) updateDestination(w http.ResponseWriter, r *http.Request) {
	p := principalOf(r)
	v, err := c.opts.Destinations.Get(r.PathValue("id"), p.Tenant)
	if err != nil {
		c.fail(w, r, err, 0, "")
		return
	}
	f := c.editForm(r, v)
	cfg, _ := v.Spec["config"].(map[string]any)
	spec, err := readForm(r, f, c.opts.Sinks, cfg)
	if err != nil {
		var fe *fieldError
		if errors.As(err, &fe) {
			f.markError(fe.field, fe.Error())
		}
		c.render(w, r, http.StatusUnprocessableEntity, "form", view{Title: "Edit " + v.Name, Nav: "destinations", Data: f})
		return
	}
	body, _ := json.Marshal(spec)
	if _, err := c.opts.Destinations.Patch(r.Context(), v.ID, p.Tenant, body); err != nil {
		c.formError(w, r, f, err, "Edit "+v.Name)
		return
	}
	http.Redirect(w, r, "/console/destinations/"+v.ID+"?done=saved", http.StatusSeeOther)
}

func (c *Console) enable(on bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p := principalOf(r)
		reason := ""
		if !on {
			reason = "disabled in the console by " + p.Name
		}
		v, err := c.opts.Destinations.SetEnabled(r.Context(), r.PathValue("id"), p.Tenant, on, reason)
		if err != nil {
			c.fail(w, r, err, 0, "")
			return
		}
		done := "enabled"
		if !on {
			done = "disabled"
		}
		http.Redirect(w, r, "/console/destinations/"+v.ID+"?done="+done, http.StatusSeeOther)
	}
}

func (c *Console) testDestination(w http.ResponseWriter, r *http.Request) {
	p := principalOf(r)
	v, err := c.opts.Destinations.Get(r.PathValue("id"), p.Tenant)
	if err != nil {
		c.fail(w, r, err, 0, "")
		return
	}
	rec, err := c.opts.Destinations.Test(r.Context(), v.ID, p.Tenant, nil)
	if err != nil {
		c.fail(w, r, err, 0, "")
		return
	}
	c.render(w, r, http.StatusOK, "attempt", view{Title: "Test send to " + v.Name, Nav: "destinations", Data: struct {
		V destinations.View
		D *store.DeliveryRecord
	}{v, rec}})
}

func (c *Console) rotateSecret(w http.ResponseWriter, r *http.Request) {
	v, secret, err := c.opts.Destinations.RotateSecret(r.Context(), r.PathValue("id"), principalOf(r).Tenant, "")
	if err != nil {
		c.fail(w, r, err, 0, "")
		return
	}
	c.render(w, r, http.StatusOK, "secret", view{Title: "Secret rotated", Nav: "destinations", Data: struct {
		V       destinations.View
		Secret  string
		Created bool
	}{v, secret, false}})
}

// replayForm is the replay page: the range and statuses, the count they select, and the outcome.
type replayForm struct {
	V        destinations.View
	Since    string
	Until    string
	Statuses []string
	Counted  bool
	Count    int
	More     bool // the count stopped at maxReplayCount
	Done     bool
	Requeued int
}

func (f replayForm) Has(s string) bool { return slices.Contains(f.Statuses, s) }

const maxReplayCount = 100000

func parseReplay(r *http.Request, f *replayForm) (store.ReplayFilter, error) {
	q := r.URL.Query()
	if r.Method == http.MethodPost {
		// Parsed here, not by the CSRF check: htmx sends the token as a header, and the form is unread then.
		r.Body = http.MaxBytesReader(nil, r.Body, 1<<20)
		if err := r.ParseForm(); err != nil {
			return store.ReplayFilter{}, &fieldError{"form", "could not be read"}
		}
		q = r.PostForm
	}
	f.Since, f.Until = q.Get("since"), q.Get("until")
	var rf store.ReplayFilter
	var err error
	if rf.Since, err = parseFormTime(f.Since, "since"); err != nil {
		return rf, err
	}
	if rf.Until, err = parseFormTime(f.Until, "until"); err != nil {
		return rf, err
	}
	for _, s := range q["status"] {
		switch st := store.Status(s); st {
		case store.Delivered, store.Failed, store.Skipped:
			rf.Statuses = append(rf.Statuses, st)
			f.Statuses = append(f.Statuses, s)
		default:
			return rf, &fieldError{"status", "must be delivered, failed or skipped"}
		}
	}
	return rf, nil
}

// countReplay counts what a replay with rf would requeue: the destination's final deliveries created in the
// range with one of the statuses (all final ones when none is given), page by page, up to maxReplayCount.
func (c *Console) countReplay(r *http.Request, name string, rf store.ReplayFilter) (int, bool, error) {
	statuses := rf.Statuses
	if len(statuses) == 0 {
		statuses = []store.Status{store.Delivered, store.Failed, store.Skipped}
	}
	n := 0
	for _, st := range statuses {
		var before int64
		for {
			rows, err := c.opts.Store.ListDeliveries(r.Context(), store.DeliveryFilter{Destinations: []string{name},
				Status: st, Since: rf.Since, Until: rf.Until, Before: before, Limit: 1000})
			if err != nil {
				return 0, false, err
			}
			n += len(rows)
			if n >= maxReplayCount {
				return n, true, nil
			}
			if len(rows) < 1000 {
				break
			}
			before = rows[len(rows)-1].ID
		}
	}
	return n, false, nil
}

func (c *Console) replayPreview(w http.ResponseWriter, r *http.Request) {
	p := principalOf(r)
	v, err := c.opts.Destinations.Get(r.PathValue("id"), p.Tenant)
	if err != nil {
		c.fail(w, r, err, 0, "")
		return
	}
	f := replayForm{V: v}
	rf, err := parseReplay(r, &f)
	if err != nil {
		c.fail(w, r, nil, http.StatusBadRequest, err.Error())
		return
	}
	if r.URL.Query().Has("count") {
		if f.Count, f.More, err = c.countReplay(r, v.ID, rf); err != nil {
			c.fail(w, r, err, 0, "")
			return
		}
		f.Counted = true
	}
	c.render(w, r, http.StatusOK, "replay", view{Title: "Replay " + v.Name, Nav: "destinations", Data: f})
}

func (c *Console) replay(w http.ResponseWriter, r *http.Request) {
	p := principalOf(r)
	v, err := c.opts.Destinations.Get(r.PathValue("id"), p.Tenant)
	if err != nil {
		c.fail(w, r, err, 0, "")
		return
	}
	f := replayForm{V: v}
	rf, err := parseReplay(r, &f)
	if err != nil {
		c.fail(w, r, nil, http.StatusBadRequest, err.Error())
		return
	}
	n, err := c.opts.Destinations.Replay(r.Context(), v.ID, p.Tenant, rf)
	if err != nil {
		c.fail(w, r, err, 0, "")
		return
	}
	f.Done, f.Requeued = true, n
	c.render(w, r, http.StatusOK, "replay", view{Title: "Replay " + v.Name, Nav: "destinations", Data: f})
}

// parseFormTime reads a time from a datetime-local input (taken as UTC) or RFC 3339; "" is no bound.
func parseFormTime(v, field string) (time.Time, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, &fieldError{field, "must be a time such as 2026-01-02T15:04 (UTC) or RFC 3339"}
}

func (c *Console) retryDelivery(w http.ResponseWriter, r *http.Request) {
	id, ok := c.opts.Numbers.Reveal(r.PathValue("id"), seal.KindDelivery)
	if !ok {
		c.fail(w, r, store.ErrNotFound, 0, "")
		return
	}
	d, err := c.opts.Destinations.Retry(r.Context(), id, principalOf(r).Tenant)
	if err != nil {
		c.fail(w, r, err, 0, "")
		return
	}
	http.Redirect(w, r, "/console/events/"+d.EventID+"?retried="+c.opts.Numbers.Hide(d.ID, seal.KindDelivery), http.StatusSeeOther)
}

func (c *Console) topics(w http.ResponseWriter, r *http.Request) {
	type topicRow struct {
		Name, Description, Schema, Example string
	}
	var rows []topicRow
	for _, t := range c.opts.Intake.Topics() {
		row := topicRow{Name: t.Name, Description: t.Description}
		if t.CompiledSchema != nil {
			row.Schema = pretty(t.CompiledSchema.JSON)
		}
		if t.Example != nil {
			b, _ := json.MarshalIndent(t.Example, "", "  ")
			row.Example = string(b)
		}
		rows = append(rows, row)
	}
	c.render(w, r, http.StatusOK, "topics", view{Title: "Topics", Nav: "topics", Data: rows})
}

func pretty(raw []byte) string {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return string(raw)
	}
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}
