package sqs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/sinks"
)

// entry is one event's message, ready for SendMessageBatch.
type entry struct {
	idx  int // the event's index in the batch, also the batch entry id
	size int // body plus attributes, as SQS counts a message's size
	req  types.SendMessageBatchRequestEntry
}

// Send delivers the batch with as few SendMessageBatch calls as SQS allows (10 messages and 256 KiB per call,
// in batch order). It returns nil when SQS took every message; otherwise the error shared by all, or a
// *sinks.BatchError with each message's own result: a message SQS refused as the sender's fault (and one too
// large to send) fails permanently, anything else is retryable.
func (s *Sink) Send(ctx context.Context, batch []event.Event) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(batch) == 0 {
		return nil
	}
	if s.closed.Load() {
		return sinks.Retryable(fmt.Errorf("sqs: queue %s: the sink is closed", s.queue), 0)
	}
	errs := make([]error, len(batch))
	entries := make([]entry, 0, len(batch))
	for i := range batch {
		e, err := s.entry(&batch[i], i)
		if err != nil {
			errs[i] = sinks.Permanent(fmt.Errorf("sqs: event %s: %w", batch[i].ID, err))
			continue
		}
		entries = append(entries, e)
	}
	for _, chunk := range chunks(entries) {
		if err := ctx.Err(); err != nil {
			// Not attempted: the cancellation, not a failure, is what the dispatcher must see for these.
			for _, e := range chunk {
				errs[e.idx] = err
			}
			continue
		}
		s.sendChunk(ctx, chunk, errs)
	}
	return sinks.Outcome(errs)
}

// chunks splits entries into SendMessageBatch calls: at most MaxBatch entries and MaxMessageBytes each, in order.
func chunks(entries []entry) [][]entry {
	var out [][]entry
	start, bytes := 0, 0
	for i, e := range entries {
		if i > start && (i-start == MaxBatch || bytes+e.size > MaxMessageBytes) {
			out = append(out, entries[start:i])
			start, bytes = i, 0
		}
		bytes += e.size
	}
	if start < len(entries) {
		out = append(out, entries[start:])
	}
	return out
}

// sendChunk makes one SendMessageBatch call and records each entry's outcome in errs.
func (s *Sink) sendChunk(ctx context.Context, chunk []entry, errs []error) {
	reqs := make([]types.SendMessageBatchRequestEntry, len(chunk))
	for j := range chunk {
		reqs[j] = chunk[j].req
	}
	out, err := s.client.SendMessageBatch(ctx, &sqs.SendMessageBatchInput{QueueUrl: &s.queueURL, Entries: reqs})
	if err != nil {
		if len(chunk) > 1 && errorCode(err) == "BatchRequestTooLong" {
			// The server's limit is below the 256 KiB Sluice assumes (a compatible server, or a queue set
			// lower): halve the call until it fits, or until one message alone is refused as too long.
			h := len(chunk) / 2
			s.sendChunk(ctx, chunk[:h], errs)
			if err := ctx.Err(); err != nil {
				for _, e := range chunk[h:] {
					errs[e.idx] = err
				}
				return
			}
			s.sendChunk(ctx, chunk[h:], errs)
			return
		}
		cerr := s.classify(ctx, err)
		for _, e := range chunk {
			errs[e.idx] = cerr
		}
		return
	}

	pos := make(map[string]int, len(chunk))
	for j, e := range chunk {
		pos[aws.ToString(e.req.Id)] = j
	}
	answered := make([]bool, len(chunk))
	for _, ok := range out.Successful {
		if j, found := pos[aws.ToString(ok.Id)]; found {
			answered[j] = true
		}
	}
	for _, f := range out.Failed {
		j, found := pos[aws.ToString(f.Id)]
		if !found {
			continue
		}
		answered[j] = true
		errs[chunk[j].idx] = entryError(s.queue, &f)
	}
	for j, e := range chunk {
		if !answered[j] {
			errs[e.idx] = sinks.Retryable(fmt.Errorf("sqs: queue %s: SendMessageBatch returned no result for "+
				"entry %s", s.queue, aws.ToString(e.req.Id)), 0)
		}
	}
	sinks.Note(ctx, 200, fmt.Appendf(nil, `{"successful":%d,"failed":%d}`, len(out.Successful), len(out.Failed)))
}

// entry builds the message for one event. Its errors are the event's own and permanent.
func (s *Sink) entry(ev *event.Event, idx int) (entry, error) {
	body, err := ev.Envelope()
	if err != nil {
		return entry{}, fmt.Errorf("encode the envelope: %v", err)
	}
	body = escapeNonCharacters(body)
	attrs, attrSize := attributes(ev)
	size := len(body) + attrSize
	if size > MaxMessageBytes {
		return entry{}, fmt.Errorf("the message is %d bytes with its attributes; SQS takes at most %d (256 KiB): "+
			"send large payloads to a bucket destination and a reference here", size, MaxMessageBytes)
	}
	req := types.SendMessageBatchRequestEntry{
		Id:                aws.String(strconv.Itoa(idx)),
		MessageBody:       aws.String(string(body)),
		MessageAttributes: attrs,
	}
	if s.group != nil {
		g, err := s.group.Render(ev, "", s.now())
		if err != nil {
			return entry{}, fmt.Errorf("message_group: %v", err)
		}
		if g == "" {
			return entry{}, fmt.Errorf("message_group %s renders empty for this event; give the placeholder a "+
				"default, like {tenant:-none}", s.group)
		}
		req.MessageGroupId = aws.String(sqsID(g))
	}
	if s.fifo {
		// The event id keeps a retried send from making a second message within SQS's 5-minute window.
		req.MessageDeduplicationId = aws.String(sqsID(ev.ID))
	}
	return entry{idx: idx, size: size, req: req}, nil
}

const stringType = "String"

// attributes carries the event's id, topic, tenant and metadata beside the body. SQS allows 10 attributes: id,
// topic and tenant come first, then metadata keys in sorted order as `metadata.<key>` while room is left. A
// metadata entry SQS would refuse (a key that is not a valid attribute name, an empty value, a character SQS
// does not take) is left out rather than failing the event: the body has the full metadata anyway. The
// returned size is what the attributes add to the message size.
func attributes(ev *event.Event) (map[string]types.MessageAttributeValue, int) {
	m := make(map[string]types.MessageAttributeValue, 3+len(ev.Metadata))
	size := 0
	put := func(name, value string) {
		m[name] = types.MessageAttributeValue{DataType: aws.String(stringType), StringValue: aws.String(value)}
		size += len(name) + len(stringType) + len(value)
	}
	put("id", ev.ID)
	put("topic", ev.Topic)
	if ev.Tenant != "" && validText(ev.Tenant) {
		put("tenant", ev.Tenant)
	}
	if len(ev.Metadata) > 0 {
		for _, k := range slices.Sorted(maps.Keys(ev.Metadata)) {
			if len(m) == MaxAttributes {
				break
			}
			name, v := "metadata."+k, ev.Metadata[k]
			if v == "" || !validAttributeName(name) || !validText(v) {
				continue
			}
			put(name, v)
		}
	}
	return m, size
}

// validAttributeName: letters, digits, '_', '-' and '.', at most 256, no '..', not ending in '.'.
func validAttributeName(name string) bool {
	if name == "" || len(name) > 256 || strings.Contains(name, "..") || strings.HasSuffix(name, ".") {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// validText reports whether SQS takes s in a message: #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD |
// #x10000 to #x10FFFF, as valid UTF-8.
func validText(s string) bool {
	for _, r := range s {
		switch {
		case r == 0x9 || r == 0xA || r == 0xD:
		case r >= 0x20 && r <= 0xD7FF:
		case r >= 0xE000 && r <= 0xFFFD:
		case r >= 0x10000 && r <= 0x10FFFF:
		default: // includes utf8.RuneError from invalid bytes, which is U+FFFD only when written as such
			return false
		}
	}
	return true
}

// escapeNonCharacters writes U+FFFE and U+FFFF, which JSON strings may hold but SQS refuses, as JSON escapes.
// Outside strings they cannot occur in valid JSON, so the body means the same to any JSON reader.
func escapeNonCharacters(body []byte) []byte {
	if !bytes.Contains(body, []byte{0xEF, 0xBF}) {
		return body
	}
	body = bytes.ReplaceAll(body, []byte("\uFFFE"), []byte(`\ufffe`))
	return bytes.ReplaceAll(body, []byte("\uFFFF"), []byte(`\uffff`))
}

// sqsID returns s as a MessageGroupId or MessageDeduplicationId: as is when SQS takes it (1–128 printable
// ASCII characters other than space), else its SHA-256 in hex, so the same input always maps to the same id.
func sqsID(s string) string {
	ok := s != "" && len(s) <= 128
	for i := 0; ok && i < len(s); i++ {
		ok = s[i] > ' ' && s[i] < 0x7f
	}
	if ok {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// errorCode is the API error code of err without the AWS.SimpleQueueService. prefix of the query protocol, or ""
// when err carries none.
func errorCode(err error) string {
	code := apiCode(err)
	return strings.TrimPrefix(code, "AWS.SimpleQueueService.")
}
