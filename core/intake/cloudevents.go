package intake

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"mime"
	"regexp"
	"strconv"
	"strings"
)

// CloudEvents content types (HTTP and AMQP bindings).
const (
	MediaCloudEvent      = "application/cloudevents+json"
	MediaCloudEventBatch = "application/cloudevents-batch+json"
)

// Metadata keys an event that arrived as a CloudEvent carries; the webhook sink's cloudevents formats read
// ce_source and ce_subject back.
const (
	MetaCEID          = "ce_id"
	MetaCESource      = "ce_source"
	MetaCESubject     = "ce_subject"
	MetaCETime        = "ce_time"
	MetaCEContentType = "ce_datacontenttype"
	MetaCEDataSchema  = "ce_dataschema"
)

// CloudEvents extension attributes that map onto event fields instead of metadata.
const (
	ceExtTenant        = "tenant"
	ceExtCorrelationID = "correlationid"
)

var ceAttrName = regexp.MustCompile(`^[a-z0-9]{1,64}$`)

// IsAttributeName reports whether name is a valid CloudEvents attribute name (lowercase letters and digits).
func IsAttributeName(name string) bool { return ceAttrName.MatchString(name) }

// ceEvent is one CloudEvent reduced to strings (attributes) and its data as JSON.
type ceEvent struct {
	attrs map[string]string
	data  json.RawMessage
}

// toInput maps a CloudEvent onto an event: type → topic, id → id (when it is a valid Sluice id), time → time;
// id, source, subject and time are also kept in metadata as ce_*, and extensions as ce_<name>, except tenant
// and correlationid which set those fields.
func (ce *ceEvent) toInput(prefix string) (*input, error) {
	a := ce.attrs
	switch a["specversion"] {
	case "1.0":
	case "":
		return nil, invalid(prefix+"specversion", "is required: a CloudEvent says specversion \"1.0\"")
	default:
		return nil, invalid(prefix+"specversion", "%q is not supported; send CloudEvents 1.0", a["specversion"])
	}
	for _, req := range []string{"id", "source", "type"} {
		if a[req] == "" {
			return nil, invalid(prefix+req, "is required in a CloudEvent (a non-empty string)")
		}
	}
	in := &input{Metadata: map[string]string{}}
	typ := a["type"]
	in.Topic = &typ
	if id := a["id"]; validID(id) {
		in.ID = &id
	}
	if t, ok := a["time"]; ok {
		in.Time = &t
	}
	for k, v := range a {
		switch k {
		case "specversion", "type":
		case "id":
			in.Metadata[MetaCEID] = v
		case "source":
			in.Metadata[MetaCESource] = v
		case "subject":
			in.Metadata[MetaCESubject] = v
		case "time":
			in.Metadata[MetaCETime] = v
		case "datacontenttype":
			if !isJSONType(v) {
				in.Metadata[MetaCEContentType] = v
			}
		case "dataschema":
			in.Metadata[MetaCEDataSchema] = v
		case ceExtTenant:
			in.Tenant = v
		case ceExtCorrelationID:
			in.CorrelationID = v
		default:
			in.Metadata["ce_"+k] = v
		}
	}
	in.Data = ce.data
	if len(in.Data) == 0 {
		in.Data = json.RawMessage("null") // a CloudEvent may carry no data
	}
	return in, nil
}

// ceItem validates a decoded CloudEvent as an event, naming CloudEvents attributes in refusals.
func ceItem(ctx context.Context, ce *ceEvent, prefix string) (Item, error) {
	in, err := ce.toInput(prefix)
	if err != nil {
		return Item{}, err
	}
	ev, err := toEvent(ctx, in, prefix)
	if err != nil {
		var e *Error
		if errors.As(err, &e) && e.Field == prefix+"topic" {
			e.Field = prefix + "type"
		}
		return Item{}, err
	}
	return Item{Event: ev}, nil
}

// DecodeCloudEvent decodes one structured-mode CloudEvent (a JSON object) as an event; prefix names it in
// refusals inside a batch ("[3].").
func DecodeCloudEvent(ctx context.Context, raw []byte, prefix string) (Item, error) {
	ce, err := decodeStructured(raw, prefix)
	if err != nil {
		return Item{}, err
	}
	return ceItem(ctx, ce, prefix)
}

// BinaryCloudEvent completes a binary-mode CloudEvent from its attributes (names without the transport's
// prefix), the data's content type and the body; attrPrefix is how the transport names attributes in
// refusals ("ce-" for HTTP headers, "cloudEvents:" for AMQP properties).
func BinaryCloudEvent(ctx context.Context, attrs map[string]string, contentType string, body []byte, attrPrefix string) (Item, error) {
	ce, err := binaryEvent(attrs, contentType, body, attrPrefix)
	if err != nil {
		return Item{}, err
	}
	return ceItem(ctx, ce, "")
}

func isJSONType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json")
}

// decodeStructured reads one structured-mode CloudEvent (a JSON object).
func decodeStructured(raw []byte, prefix string) (*ceEvent, error) {
	var obj map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&obj); err != nil || obj == nil {
		return nil, invalid(strings.TrimSuffix(prefix, "."), "not a CloudEvent: a structured CloudEvent is a JSON object with specversion, id, source and type")
	}
	if dec.More() {
		return nil, invalid("", "the body must hold a single JSON object")
	}
	ce := &ceEvent{attrs: map[string]string{}}
	_, hasData := obj["data"]
	b64, hasB64 := obj["data_base64"]
	if hasData && hasB64 {
		return nil, invalid(prefix+"data_base64", "give either data or data_base64, not both")
	}
	for k, v := range obj {
		switch k {
		case "data":
			ce.data = v
			continue
		case "data_base64":
			continue
		}
		if !ceAttrName.MatchString(k) {
			return nil, invalid(prefix+k, "%q is not a CloudEvents attribute name: use lowercase letters and digits only", k)
		}
		s, ok := ceScalar(v)
		if !ok {
			return nil, invalid(prefix+k, "must be a string, number or boolean (CloudEvents attributes are scalars)")
		}
		if s == "" && bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
			continue // a null attribute is an absent one
		}
		ce.attrs[k] = s
	}
	if hasB64 {
		var s string
		if err := json.Unmarshal(b64, &s); err != nil {
			return nil, invalid(prefix+"data_base64", "must be a base64 string")
		}
		d, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, invalid(prefix+"data_base64", "is not valid base64: %v", err)
		}
		data, err := dataFor(d, ce.attrs["datacontenttype"], prefix+"data_base64")
		if err != nil {
			return nil, err
		}
		ce.data = data
	}
	return ce, nil
}

// ceScalar renders a JSON scalar as a CloudEvents attribute string.
func ceScalar(v json.RawMessage) (string, bool) {
	var x any
	if err := json.Unmarshal(v, &x); err != nil {
		return "", false
	}
	switch t := x.(type) {
	case nil:
		return "", true
	case string:
		return t, true
	case bool:
		return strconv.FormatBool(t), true
	case float64:
		return strings.TrimSpace(string(v)), true
	}
	return "", false
}

// dataFor turns binary data of a content type into the JSON Sluice stores: JSON as it is, text as a JSON string.
// Other media cannot be relayed as JSON and are refused.
func dataFor(body []byte, contentType, field string) (json.RawMessage, error) {
	if len(body) == 0 {
		return json.RawMessage("null"), nil
	}
	mt := "application/json"
	if contentType != "" {
		var err error
		if mt, _, err = mime.ParseMediaType(contentType); err != nil {
			return nil, invalid(field, "the data's content type %q cannot be parsed", contentType)
		}
	}
	switch {
	case mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json"):
		if !json.Valid(body) {
			return nil, invalid(field, "is not valid JSON although its content type is %s", mt)
		}
		return json.RawMessage(body), nil
	case strings.HasPrefix(mt, "text/"):
		b, _ := json.Marshal(string(body))
		return b, nil
	}
	return nil, refuse(ErrUnsupportedMedia, field, "data of content type %q cannot be relayed: Sluice carries JSON (or text) data", contentType)
}

// binaryEvent completes a binary-mode CloudEvent from its attributes and body; prefix is how the transport
// names attributes ("ce-" for HTTP headers) in problems.
func binaryEvent(attrs map[string]string, contentType string, body []byte, prefix string) (*ceEvent, error) {
	if contentType != "" {
		attrs["datacontenttype"] = contentType
	}
	data, err := dataFor(body, contentType, "data")
	if err != nil {
		return nil, err
	}
	for _, req := range []string{"specversion", "id", "source", "type"} {
		if attrs[req] == "" {
			return nil, invalid(prefix+req, "is required in a binary-mode CloudEvent")
		}
	}
	return &ceEvent{attrs: attrs, data: data}, nil
}

// SplitCloudEventBatch reads a CloudEvents batch: a JSON array of structured CloudEvents, for DecodeCloudEvent.
func SplitCloudEventBatch(body []byte) ([]json.RawMessage, error) {
	var items []json.RawMessage
	if err := json.Unmarshal(body, &items); err != nil {
		return nil, invalid("", "a CloudEvents batch is a JSON array of structured CloudEvents: %v", strings.TrimPrefix(err.Error(), "json: "))
	}
	return items, nil
}

// mediaType returns a content type's media type, lowercased ("" when absent or unparsable).
func mediaType(ct string) string {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return ""
	}
	return mt
}
