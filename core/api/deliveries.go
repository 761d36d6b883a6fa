package api

import (
	"errors"
	"net/http"
	"slices"

	"github.com/sluicehq/sluice/core/seal"
	"github.com/sluicehq/sluice/core/store"
)

var statuses = []store.Status{store.Pending, store.Delivered, store.Failed, store.Skipped}

func parseStatus(v, field string) (store.Status, *problem) {
	st := store.Status(v)
	if !slices.Contains(statuses, st) {
		return "", badParam(field, "must be one of pending, delivered, failed, skipped (got %q)", v)
	}
	return st, nil
}

// listDeliveries serves GET /v1/deliveries: deliveries newest first, without their attempt lists. A tenant
// key sees deliveries to its own destinations only.
func (s *Server) listDeliveries(w http.ResponseWriter, r *http.Request) {
	lp, p := s.parseList(r)
	if p != nil {
		writeError(w, p)
		return
	}
	q := r.URL.Query()
	f := store.DeliveryFilter{EventID: q.Get("event"), Since: lp.since, Until: lp.until, Before: lp.before, Limit: lp.limit + 1}
	if v := q.Get("status"); v != "" {
		if f.Status, p = parseStatus(v, "status"); p != nil {
			writeError(w, p)
			return
		}
	}
	tenant := principal(r.Context()).Tenant
	if v := q.Get("destination"); v != "" {
		// An id or a name of a live destination; otherwise the value is taken as the id of one that is gone
		// (its deliveries stay in the log) — which a tenant key cannot see, as it is no longer its own.
		id := v
		if view, err := s.dests.Get(v, tenant); err == nil {
			id = view.ID
		}
		f.Destinations = []string{id}
	}
	if v := q.Get("tenant"); v != "" {
		// Deliveries to that tenant's destinations; a tenant key asking for another tenant gets none.
		scope := []string{}
		if tenant == "" || v == tenant {
			scope = s.dests.IDs(v)
		}
		f.Destinations = within(f.Destinations, scope)
	}
	if tenant != "" {
		f.Destinations = within(f.Destinations, s.dests.IDs(tenant))
	}
	rows, err := s.store.ListDeliveries(r.Context(), f)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, pageOf(rows, lp.limit, func(d store.Delivery) string { return s.cursor(d.ID) },
		func(d store.Delivery) deliveryJSON { return s.deliveryView(d, nil, false) }))
}

// within narrows a destination filter (nil = every destination) to scope; the result is never nil, so an
// empty scope matches nothing.
func within(filter, scope []string) []string {
	if filter == nil {
		return append([]string{}, scope...)
	}
	return slices.DeleteFunc(filter, func(n string) bool { return !slices.Contains(scope, n) })
}

// deliveryID reads a delivery id (as deliveryView shows it); anything that is not one is simply an id that
// does not exist (404).
func (s *Server) deliveryID(r *http.Request) (int64, bool) {
	return s.nums.Reveal(r.PathValue("id"), seal.KindDelivery)
}

// getDelivery serves GET /v1/deliveries/{id} with its attempts. Another tenant's delivery is 404.
func (s *Server) getDelivery(w http.ResponseWriter, r *http.Request) {
	id, ok := s.deliveryID(r)
	if !ok {
		writeError(w, notFound("delivery"))
		return
	}
	rec, err := s.store.Delivery(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && !s.visible(principal(r.Context()).Tenant)(rec.Destination)) {
		writeError(w, notFound("delivery"))
		return
	}
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s.deliveryView(rec.Delivery, rec.AttemptLog, true))
}

// retryDelivery serves POST /v1/deliveries/{id}/retry: the delivery is requeued, due now, with a fresh retry
// schedule; the answer (202) is the delivery as requeued. Any body is ignored.
func (s *Server) retryDelivery(w http.ResponseWriter, r *http.Request) {
	id, ok := s.deliveryID(r)
	if !ok {
		writeError(w, notFound("delivery"))
		return
	}
	d, err := s.dests.Retry(r.Context(), id, principal(r.Context()).Tenant)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, s.deliveryView(d, nil, false))
}
