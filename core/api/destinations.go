package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"reflect"
	"time"

	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/core/destinations"
	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/store"
)

// The destination handlers are thin: the Manager validates, answers client errors as *destinations.Error, and
// scopes every lookup to the caller's tenant (another tenant's destination is "not found").

func tenantOf(r *http.Request) string { return principal(r.Context()).Tenant }

// listDestinations serves GET /v1/destinations: YAML and API destinations together, in one page (there are
// few; next_cursor is always empty).
func (s *Server) listDestinations(w http.ResponseWriter, r *http.Request) {
	views := s.dests.List(tenantOf(r))
	if views == nil {
		views = []destinations.View{}
	}
	writeJSON(w, http.StatusOK, page{Data: views})
}

func (s *Server) createDestination(w http.ResponseWriter, r *http.Request) {
	body, p := readBody(w, r)
	if p != nil {
		writeError(w, p)
		return
	}
	v, err := s.dests.Create(r.Context(), body, tenantOf(r))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, v)
}

func (s *Server) getDestination(w http.ResponseWriter, r *http.Request) {
	v, err := s.dests.Get(r.PathValue("id"), tenantOf(r))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) patchDestination(w http.ResponseWriter, r *http.Request) {
	body, p := readBody(w, r)
	if p != nil {
		writeError(w, p)
		return
	}
	v, err := s.dests.Patch(r.Context(), r.PathValue("id"), tenantOf(r), body)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (s *Server) deleteDestination(w http.ResponseWriter, r *http.Request) {
	if err := s.dests.Delete(r.Context(), r.PathValue("id"), tenantOf(r)); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) enableDestination(w http.ResponseWriter, r *http.Request) {
	s.setEnabled(w, r, true)
}

func (s *Server) disableDestination(w http.ResponseWriter, r *http.Request) {
	s.setEnabled(w, r, false)
}

// setEnabled serves /enable and /disable. Both take an optional {"reason"}; a disable without one records who
// disabled it, so the reason shown later says more than "disabled".
func (s *Server) setEnabled(w http.ResponseWriter, r *http.Request, on bool) {
	var body struct {
		Reason string `json:"reason"`
	}
	if _, p := decodeBody(w, r, &body); p != nil {
		writeError(w, p)
		return
	}
	reason := body.Reason
	if reason == "" && !on {
		reason = "disabled over the API by key " + principal(r.Context()).Name
	}
	v, err := s.dests.SetEnabled(r.Context(), r.PathValue("id"), tenantOf(r), on, reason)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// testDestination serves /test: an empty body sends the catalog example of the destination's topic, or the
// body's {"topic", "data", "metadata"?}. The answer is the delivery with its attempt, marked test.
func (s *Server) testDestination(w http.ResponseWriter, r *http.Request) {
	// The answer waits for one attempt, which may take up to the largest per-destination timeout: longer than
	// server.write_timeout allows other answers.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(config.MaxTimeout + time.Minute))
	var body struct {
		Topic    *string           `json:"topic"`
		Data     json.RawMessage   `json:"data"`
		Metadata map[string]string `json:"metadata"`
	}
	given, p := decodeBody(w, r, &body)
	if p != nil {
		writeError(w, p)
		return
	}
	var ev *event.Event
	if given {
		switch {
		case body.Topic == nil || *body.Topic == "":
			p = &problem{Status: http.StatusBadRequest, Code: "invalid_body", Field: "topic",
				Message: "is required in a test event, e.g. {\"topic\": \"case.created\", \"data\": {}}; send no body to use the catalog example"}
		case len(bytes.TrimSpace(body.Data)) == 0 || bytes.Equal(bytes.TrimSpace(body.Data), []byte("null")):
			p = &problem{Status: http.StatusBadRequest, Code: "invalid_body", Field: "data",
				Message: "is required in a test event: the payload as JSON (use {} for none)"}
		}
		if p != nil {
			writeError(w, p)
			return
		}
		ev = &event.Event{Topic: *body.Topic, Data: body.Data, Metadata: body.Metadata}
	}
	rec, err := s.dests.Test(r.Context(), r.PathValue("id"), tenantOf(r), ev)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, s.deliveryView(rec.Delivery, rec.AttemptLog, true))
}

// rotateSecretJSON answers /rotate-secret: the destination (secrets masked) and the new secret in full, the
// only time it is shown.
type rotateSecretJSON struct {
	Destination destinations.View `json:"destination"`
	Secret      string            `json:"secret"`
}

func (s *Server) rotateSecret(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Secret string `json:"secret"`
	}
	if _, p := decodeBody(w, r, &body); p != nil {
		writeError(w, p)
		return
	}
	v, secret, err := s.dests.RotateSecret(r.Context(), r.PathValue("id"), tenantOf(r), body.Secret)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, rotateSecretJSON{Destination: v, Secret: secret})
}

// statusList is one status or a list of them in a replay body.
type statusList []string

func (l *statusList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*l = statusList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return &json.UnmarshalTypeError{Value: string(b), Type: typeOfString}
	}
	*l = many
	return nil
}

// replayDestination serves /replay: {since?, until?, status?} requeues the destination's final deliveries
// created in [since, until) with one of the statuses (default: every final status). Answers 202 {"requeued"}.
func (s *Server) replayDestination(w http.ResponseWriter, r *http.Request) {
	// A large replay requeues in many small transactions; its answer may come after server.write_timeout.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(15 * time.Minute))
	var body struct {
		Since  string     `json:"since"`
		Until  string     `json:"until"`
		Status statusList `json:"status"`
	}
	if _, p := decodeBody(w, r, &body); p != nil {
		writeError(w, p)
		return
	}
	var f store.ReplayFilter
	var p *problem
	if f.Since, p = parseTime(body.Since, "since"); p != nil {
		writeError(w, p)
		return
	}
	if f.Until, p = parseTime(body.Until, "until"); p != nil {
		writeError(w, p)
		return
	}
	for _, v := range body.Status {
		st, p := parseStatus(v, "status")
		if p == nil && st == store.Pending {
			p = badParam("status", "pending deliveries are on their way already; replay takes delivered, failed or skipped")
		}
		if p != nil {
			writeError(w, p)
			return
		}
		f.Statuses = append(f.Statuses, st)
	}
	n, err := s.dests.Replay(r.Context(), r.PathValue("id"), tenantOf(r), f)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]int{"requeued": n})
}

var typeOfString = reflect.TypeFor[string]()
