package api_test

import (
	"context"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3filter"
)

// routes are the server's routes; the document must describe each.
var routes = []struct{ method, path string }{
	{"POST", "/v1/events"}, {"POST", "/v1/events/batch"}, {"GET", "/v1/events"}, {"GET", "/v1/events/{id}"},
	{"GET", "/v1/deliveries"}, {"GET", "/v1/deliveries/{id}"}, {"POST", "/v1/deliveries/{id}/retry"},
	{"GET", "/v1/destinations"}, {"POST", "/v1/destinations"}, {"GET", "/v1/destinations/{id}"},
	{"PATCH", "/v1/destinations/{id}"}, {"DELETE", "/v1/destinations/{id}"},
	{"POST", "/v1/destinations/{id}/enable"}, {"POST", "/v1/destinations/{id}/disable"},
	{"POST", "/v1/destinations/{id}/test"}, {"POST", "/v1/destinations/{id}/rotate-secret"},
	{"POST", "/v1/destinations/{id}/replay"}, {"GET", "/v1/topics"}, {"POST", "/v1/portal-links"},
	{"GET", "/v1/openapi.json"},
	{"GET", "/healthz"}, {"GET", "/readyz"}, {"GET", "/metrics"},
}

// open are the routes that need no key.
var open = map[string]bool{"/v1/openapi.json": true, "/healthz": true, "/readyz": true, "/metrics": true}

// TestOpenAPIDocument: the document is valid OpenAPI 3.1 (kin-openapi's loader and validator), describes
// every route, and says which need the bearer key.
func TestOpenAPIDocument(t *testing.T) {
	oa := loadOpenAPI(t)
	doc := oa.doc
	if doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi = %q", doc.OpenAPI)
	}
	if s := doc.Components.SecuritySchemes["bearer"]; s == nil || s.Value.Type != "http" || s.Value.Scheme != "bearer" {
		t.Fatal("no bearer security scheme")
	}
	if len(doc.Security) != 1 {
		t.Fatalf("global security: %v", doc.Security)
	}
	for _, s := range []string{"Event", "Delivery", "Attempt", "Destination", "Error", "EventList", "DeliveryList", "DestinationList"} {
		if doc.Components.Schemas[s] == nil {
			t.Fatalf("components.schemas.%s is missing", s)
		}
	}
	described := 0
	for _, r := range routes {
		item := doc.Paths.Value(r.path)
		if item == nil || item.GetOperation(r.method) == nil {
			t.Errorf("%s %s is not in openapi.json", r.method, r.path)
			continue
		}
		described++
		op := item.GetOperation(r.method)
		if op.OperationID == "" {
			t.Errorf("%s %s has no operationId", r.method, r.path)
		}
		switch {
		case open[r.path] && (op.Security == nil || len(*op.Security) != 0):
			t.Errorf("%s %s needs no key but does not say security: []", r.method, r.path)
		case !open[r.path] && op.Security != nil:
			t.Errorf("%s %s overrides the bearer requirement", r.method, r.path)
		}
	}
	// Nothing described that the server does not serve.
	n := 0
	for _, item := range doc.Paths.Map() {
		n += len(item.Operations())
	}
	if n != described {
		t.Errorf("openapi.json describes %d operations, the server has %d", n, described)
	}

	// The validator is not a no-op: a malformed delivery fails it.
	req, _ := http.NewRequest("GET", openAPIServer+"/v1/deliveries/1", nil)
	route, params, err := oa.router.FindRoute(req)
	if err != nil {
		t.Fatal(err)
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
		Status:                 200, Header: http.Header{"Content-Type": {"application/json"}},
	}
	in.SetBodyBytes([]byte(`{"id": 1, "status": "lost"}`))
	if openapi3filter.ValidateResponse(context.Background(), in) == nil {
		t.Fatal("a malformed delivery passes validation")
	}
}

// TestOpenAPIConformance drives every admin operation through the real stack and insists that each answer
// listed below was validated against the document (the harness validates every answer it sees).
func TestOpenAPIConformance(t *testing.T) {
	h := newHarness(t)
	rcv := newReceiver(t)
	d := h.createHook(adminKey, "oa", rcv.URL, map[string]any{"topics": []string{"case.*"},
		"filter": map[string]any{"data": map[string]any{"case": map[string]any{"status": map[string]any{"$in": []string{"approved"}}}}},
		"retry":  map[string]any{"schedule": []string{"1h"}}, "timeout": "5s", "concurrency": 2})
	id := d["id"].(string)
	h.must(http.StatusOK, "GET", "/v1/destinations/"+id, readerKey, nil)
	h.must(http.StatusOK, "GET", "/v1/destinations", readerKey, nil)
	h.must(http.StatusOK, "PATCH", "/v1/destinations/"+id, adminKey, `{"transform": "data.case"}`)
	h.must(http.StatusOK, "POST", "/v1/destinations/"+id+"/disable", adminKey, `{"reason": "checking"}`)
	h.must(http.StatusOK, "POST", "/v1/destinations/"+id+"/enable", adminKey, "")
	ev := h.publish(adminKey, caseEvent(map[string]any{"metadata": map[string]string{"k": "v"}, "scope": map[string]string{"w": "1"}}))
	h.publish(acmeKey, caseEvent(nil))
	waitFor(t, "the delivery", func() bool { return len(rcv.got(ev)) == 1 })
	h.must(http.StatusOK, "GET", "/v1/events", readerKey, nil)
	h.must(http.StatusOK, "GET", "/v1/events?limit=1", readerKey, nil)
	h.must(http.StatusOK, "GET", "/v1/events/"+ev, readerKey, nil)
	h.must(http.StatusOK, "GET", "/v1/deliveries", readerKey, nil)
	did := h.deliveryOf(ev, "oa")["id"].(string)
	h.waitStatus(did, "delivered")
	h.must(http.StatusAccepted, "POST", "/v1/deliveries/"+did+"/retry", adminKey, "")
	waitFor(t, "the retried delivery", func() bool { return len(rcv.got(ev)) == 2 })
	h.waitStatus(did, "delivered")
	h.must(http.StatusAccepted, "POST", "/v1/destinations/"+id+"/replay", adminKey, `{"status": "delivered"}`)
	h.must(http.StatusOK, "POST", "/v1/destinations/"+id+"/test", adminKey, "")
	h.must(http.StatusOK, "POST", "/v1/destinations/"+id+"/rotate-secret", adminKey, "")
	h.must(http.StatusOK, "GET", "/v1/topics", readerKey, nil)
	h.must(http.StatusAccepted, "POST", "/v1/events/batch", adminKey, `{"events": [{"topic": "order.created", "data": 1}, {"data": 1}]}`)
	// Errors.
	h.must(http.StatusUnauthorized, "POST", "/v1/destinations", "", "{")
	h.must(http.StatusForbidden, "POST", "/v1/destinations", readerKey, "{")
	h.must(http.StatusNotFound, "GET", "/v1/destinations/nope", readerKey, nil)
	h.must(http.StatusConflict, "PATCH", "/v1/destinations/"+yamlHookName, adminKey, "{}")
	h.must(http.StatusUnprocessableEntity, "POST", "/v1/destinations", adminKey, `{"name": "x", "type": "webhook", "config": {}}`)
	h.must(http.StatusBadRequest, "GET", "/v1/events?limit=0", readerKey, nil)
	h.must(http.StatusNotFound, "GET", "/v1/deliveries/424242", readerKey, nil)
	h.must(http.StatusNotFound, "GET", "/v1/events/nope", readerKey, nil)
	h.must(http.StatusNoContent, "DELETE", "/v1/destinations/"+id, adminKey, nil)
	h.must(http.StatusOK, "GET", "/v1/openapi.json", "", nil)
	h.must(http.StatusOK, "GET", "/healthz", "", nil)
	h.must(http.StatusOK, "GET", "/readyz", "", nil)

	want := []string{
		"createDestination 201", "getDestination 200", "listDestinations 200", "patchDestination 200",
		"listEvents 200", "getEvent 200", "listDeliveries 200", "getDelivery 200", "retryDelivery 202",
		"replayDestination 202", "testDestination 200", "rotateSecret 200", "enableDestination 200",
		"disableDestination 200", "deleteDestination 204", "listTopics 200", "publishEvent 202", "publishBatch 202",
		"createDestination 401", "createDestination 403", "getDestination 404", "patchDestination 409",
		"createDestination 422", "listEvents 400", "getDelivery 404", "getEvent 404",
		"getOpenAPI 200", "healthz 200", "readyz 200",
	}
	got := h.oa.covered()
	var missing []string
	for _, w := range want {
		if !got[w] {
			missing = append(missing, w)
		}
	}
	if len(missing) > 0 {
		var have []string
		for k := range got {
			have = append(have, k)
		}
		sort.Strings(have)
		t.Fatalf("not validated: %s\nvalidated: %s", strings.Join(missing, ", "), strings.Join(have, ", "))
	}
}
