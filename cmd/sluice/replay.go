package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// replayStatuses are the delivery statuses --status accepts (DESIGN §3). The server requeues only final ones
// and says so; pending is accepted here so that its answer, not the CLI, explains that.
var replayStatuses = []string{"pending", "delivered", "failed", "skipped"}

// statusList collects --status values, repeated or comma-separated.
type statusList []string

func (s *statusList) String() string { return strings.Join(*s, ",") }

func (s *statusList) Set(v string) error {
	for _, part := range strings.Split(v, ",") {
		part = strings.ToLower(strings.TrimSpace(part))
		if part == "" {
			continue
		}
		known := false
		for _, k := range replayStatuses {
			known = known || part == k
		}
		if !known {
			return fmt.Errorf("unknown status %q; want one of %s (repeat the flag or separate with commas)",
				part, strings.Join(replayStatuses, ", "))
		}
		*s = append(*s, part)
	}
	return nil
}

// parseReplayTime reads --since/--until: an RFC 3339 time, or a duration meaning that long before now
// ("90m", "2h", also "7d" for days, which Go durations lack).
func parseReplayTime(flagName, v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		if days, ok := strings.CutSuffix(v, "d"); ok {
			if n, err2 := strconv.ParseFloat(days, 64); err2 == nil {
				d, err = time.Duration(n*float64(24*time.Hour)), nil
			}
		}
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("--%s %q: want an RFC 3339 time (2024-05-01T12:00:00Z) or how long ago (2h, 30m, 7d)", flagName, v)
	}
	if d < 0 {
		return time.Time{}, fmt.Errorf("--%s %q: a duration means that long ago, so it must not be negative", flagName, v)
	}
	return now.Add(-d), nil
}

// runReplay is `sluice replay`: it asks a running Sluice to requeue a destination's deliveries.
func runReplay(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: sluice replay --destination NAME [--since T] [--until T] [--status S]... [--server URL] [--key KEY]

Requeue a destination's deliveries: each is sent again with a fresh retry schedule. Without --status every
final delivery (delivered, failed, skipped) in the time range is requeued. T is an RFC 3339 time or how long
ago (2h, 30m, 7d).

`)
		fs.PrintDefaults()
	}
	client := clientFlags(fs)
	dest := fs.String("destination", "", "name (or id) of the destination whose deliveries to requeue (required)")
	since := fs.String("since", "", "only deliveries created at or after T")
	until := fs.String("until", "", "only deliveries created before T")
	var statuses statusList
	fs.Var(&statuses, "status", "only deliveries with this status: "+strings.Join(replayStatuses, ", ")+" (repeatable, or comma-separated)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "sluice replay: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() > 0 {
		return fail("unexpected argument %q; name the destination with --destination NAME", fs.Arg(0))
	}
	if strings.TrimSpace(*dest) == "" {
		return fail("--destination is required: the name of the destination whose deliveries to requeue")
	}
	if err := client.check(); err != nil {
		return fail("%v", err)
	}
	now := time.Now()
	body := map[string]any{}
	var from, to time.Time
	if *since != "" {
		t, err := parseReplayTime("since", *since, now)
		if err != nil {
			return fail("%v", err)
		}
		from = t
		body["since"] = t.UTC().Format(time.RFC3339Nano)
	}
	if *until != "" {
		t, err := parseReplayTime("until", *until, now)
		if err != nil {
			return fail("%v", err)
		}
		to = t
		body["until"] = t.UTC().Format(time.RFC3339Nano)
	}
	if !from.IsZero() && !to.IsZero() && !from.Before(to) {
		return fail("--since %s is not before --until %s, so nothing could match; swap them?", *since, *until)
	}
	if len(statuses) > 0 {
		body["status"] = []string(statuses)
	}
	b, _ := json.Marshal(body)
	resp, err := client.post(ctx, "/v1/destinations/"+url.PathEscape(*dest)+"/replay", b)
	if err != nil {
		fmt.Fprintf(stderr, "sluice replay: %v\n", err)
		return 1
	}
	if resp.StatusCode/100 != 2 {
		fmt.Fprintf(stderr, "sluice replay: %s\n", resp.errorMessage())
		return 1
	}
	var out struct {
		Requeued *int `json:"requeued"`
	}
	if err := json.Unmarshal(resp.Body, &out); err != nil || out.Requeued == nil {
		fmt.Fprintf(stderr, "sluice replay: unexpected answer from %s (%s): %.200s\n", client.server, resp.Status, resp.Body)
		return 1
	}
	fmt.Fprintf(stdout, "requeued %d deliveries of %s\n", *out.Requeued, *dest)
	return 0
}
