package console_test

import (
	"context"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/sluicehq/sluice/core/store"
)

// The browser tests drive Debian's chromium (headless) through the console as a person would. They skip
// only when /usr/bin/chromium is missing and CI is not set; .ci/services/chromium.sh installs it.

var screenshots = flag.Bool("screenshots", false, "write the browser tests' screenshots to docs/console/")

const chromium = "/usr/bin/chromium"

// browser starts a fresh headless chromium (its own profile directory) and returns a tab's context.
func browser(t *testing.T, width, height int) context.Context {
	t.Helper()
	if _, err := os.Stat(chromium); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is missing: CI must run the browser tests (.ci/services/chromium.sh installs it)", chromium)
		}
		t.Skipf("%s is not installed (apt-get install chromium, or .ci/services/chromium.sh)", chromium)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		// As root on these machines chromium needs these, and without the rest it tries the (closed)
		// network at every start.
		chromedp.Flag("headless", true), chromedp.NoSandbox, chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true), chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("font-render-hinting", "none"),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(width, height),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	// Every Content-Security-Policy violation and uncaught script error a page causes fails the test: a page
	// that needs an inline style or script, or an htmx feature the CSP forbids, would break for users.
	var mu sync.Mutex
	var problems []string
	ctx, cancelTab := chromedp.NewContext(actx, chromedp.WithListener(func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch ev := ev.(type) {
		case *cdplog.EventEntryAdded:
			if ev.Entry != nil && (strings.Contains(ev.Entry.Text, "Content Security Policy") || ev.Entry.Level == cdplog.EntryLevelError && ev.Entry.Source == cdplog.EntrySourceJavascript) {
				problems = append(problems, ev.Entry.Text)
			}
		case *runtime.EventExceptionThrown:
			if ev.ExceptionDetails != nil {
				problems = append(problems, ev.ExceptionDetails.Text+" "+describe(ev.ExceptionDetails.Exception))
			}
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError {
				for _, a := range ev.Args {
					problems = append(problems, "console.error: "+describe(a))
				}
			}
		}
	}))
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, p := range problems {
			t.Errorf("the browser reported: %s", p)
		}
	})
	ctx, cancelTime := context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(func() {
		cancelTime()
		cancelTab()
		cancelAlloc()
	})
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

func describe(o *runtime.RemoteObject) string {
	if o == nil {
		return ""
	}
	if o.Description != "" {
		return o.Description
	}
	return string(o.Value)
}

func do(t *testing.T, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatal(err)
	}
}

func eval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js, func(p *runtime.EvaluateParams) { yes := true; p.AwaitPromise = &yes }))
	if err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return v
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// shot takes a full-page PNG; with -screenshots it is written to docs/console/NAME.png.
func shot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	if len(png) < 1000 {
		t.Fatalf("screenshot %s is empty", name)
	}
	if *screenshots {
		if err := os.WriteFile(filepath.Join("..", "..", "..", "docs", "console", name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func signInBrowser(t *testing.T, ctx context.Context, h *harness, key string) {
	t.Helper()
	do(t, ctx,
		chromedp.Navigate(h.http.URL+"/console/"),
		chromedp.WaitVisible(chromedp.CSS("#key")),
		chromedp.SendKeys(chromedp.CSS("#key"), key),
		chromedp.Click(chromedp.CSS(`form[action="/console/login"] button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`nav a[aria-current="page"][href="/console/"]`)),
	)
}

func TestBrowserAdmin(t *testing.T) {
	h := newHarness(t)
	seed := h.publish("case.status_updated", "", `{"case": {"id": "c-0", "status": "approved"}}`)
	h.waitFor("the seed delivery", func() bool { return h.hook.count() == 1 })
	ctx := browser(t, 1280, 900)

	do(t, ctx, chromedp.Navigate(h.http.URL+"/console/login"), chromedp.WaitVisible(chromedp.CSS("#key")))
	shot(t, ctx, "login")
	signInBrowser(t, ctx, h, adminKey)

	// Create a webhook destination through the generated form.
	rcv := newReceiver(t)
	rcv.setStatus(http.StatusServiceUnavailable)
	do(t, ctx,
		chromedp.Click(chromedp.CSS(`a[href="/console/destinations"]`)),
		chromedp.WaitVisible(chromedp.CSS(`a.button.primary[href="/console/destinations/new"]`)),
		chromedp.Click(chromedp.CSS(`a.button.primary[href="/console/destinations/new"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#cfg-url`)),
		chromedp.SendKeys(chromedp.CSS("#f-name"), "partner"),
		chromedp.SendKeys(chromedp.CSS("#f-topics"), "case.*"),
		chromedp.SendKeys(chromedp.CSS("#cfg-url"), rcv.URL+"/hooks"),
		chromedp.SendKeys(chromedp.CSS("#cfg-headers"), "X-Team: kyc"),
	)
	shot(t, ctx, "destination-form")
	do(t, ctx, chromedp.Click(chromedp.CSS("#save")), chromedp.WaitVisible(chromedp.CSS("#secret")))
	secret := eval[string](t, ctx, `document.querySelector("#secret").value`)
	if !strings.HasPrefix(secret, "whsec_") {
		t.Fatalf("the new secret shown is %q", secret)
	}
	shot(t, ctx, "secret")
	partner, err := h.mgr.Get("partner", "")
	if err != nil {
		t.Fatal(err)
	}

	// Live tail: an event published now appears without a reload.
	do(t, ctx, chromedp.Navigate(h.http.URL+"/console/live"),
		chromedp.WaitVisible(chromedp.CSS(`#tail a[href="/console/events/`+seed+`"]`)))
	// The stream is open once htmx has connected it; publishing before that would still show (the stream
	// starts after the newest row rendered), so no wait is needed here.
	id := h.publish("case.status_updated", "", `{"case": {"id": "c-1", "status": "approved"}}`)
	do(t, ctx, chromedp.WaitVisible(chromedp.CSS(`#tail a[href="/console/events/`+id+`"]`)))
	shot(t, ctx, "live")

	// Open it and see the failed attempt (the receiver answers 503, so it waits for a retry in an hour).
	h.waitFor("the first attempt", func() bool { return h.deliveryOf(id, "partner").Attempts >= 1 })
	do(t, ctx, chromedp.Click(chromedp.CSS(`#tail a[href="/console/events/`+id+`"]`)),
		chromedp.WaitVisible(chromedp.CSS("#payload")))
	d := h.deliveryOf(id, "partner")
	sel := "#delivery-" + h.did(d.ID)
	if got := text(t, ctx, sel+" .attempts"); !strings.Contains(got, "HTTP 503") {
		t.Fatalf("the attempt shown: %q", got)
	}
	// Pending deliveries have no retry button; make it final, then retry it from the page.
	rcv.setStatus(http.StatusBadRequest)
	if _, err := h.st.Retry(context.Background(), d.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	h.waitFor("the failed delivery", func() bool { return h.deliveryOf(id, "partner").Status == store.Failed })
	do(t, ctx, chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(sel+" button.retry")))
	shot(t, ctx, "event")
	rcv.setStatus(http.StatusNoContent)
	do(t, ctx, chromedp.Click(chromedp.CSS(sel+" button.retry")),
		chromedp.WaitVisible(chromedp.CSS(`.alert.ok[role="status"]`)))
	h.waitFor("the retried delivery", func() bool { return h.deliveryOf(id, "partner").Status == store.Delivered })

	// Replay by range and status: the count comes first, then the confirmation.
	do(t, ctx,
		chromedp.Navigate(h.http.URL+"/console/destinations/"+partner.ID+"/replay"),
		chromedp.WaitVisible(chromedp.CSS("#count")),
		chromedp.SetValue(chromedp.CSS("#r-since"), time.Now().UTC().Add(-time.Hour).Format("2006-01-02T15:04")),
		chromedp.Click(chromedp.CSS(`input[name="status"][value="delivered"]`)),
		chromedp.Click(chromedp.CSS("#count")),
		chromedp.WaitVisible(chromedp.CSS("#replay-count")),
	)
	if got := text(t, ctx, "#replay-count"); !strings.HasPrefix(got, "1 delivery will be requeued") {
		t.Fatalf("replay count: %q", got)
	}
	shot(t, ctx, "replay")
	before := rcv.count()
	do(t, ctx, chromedp.Click(chromedp.CSS("#confirm")), chromedp.WaitVisible(chromedp.CSS("#replayed")))
	h.waitFor("the replayed delivery", func() bool { return rcv.count() > before })

	// The remaining pages, for the record and to check they render in a browser.
	do(t, ctx, chromedp.Navigate(h.http.URL+"/console/destinations/"+partner.ID), chromedp.WaitVisible(chromedp.CSS("#send-test")),
		chromedp.Click(chromedp.CSS("#send-test")), chromedp.WaitVisible(chromedp.CSS(".attempts .badge.ok")))
	do(t, ctx, chromedp.Navigate(h.http.URL+"/console/destinations/"+partner.ID), chromedp.WaitVisible(chromedp.CSS(".actions")))
	shot(t, ctx, "destination")
	do(t, ctx, chromedp.Navigate(h.http.URL+"/console/destinations"), chromedp.WaitVisible(chromedp.CSS("table")))
	shot(t, ctx, "destinations")
	do(t, ctx, chromedp.Navigate(h.http.URL+"/console/events"), chromedp.WaitVisible(chromedp.CSS("#events")))
	shot(t, ctx, "events")
	do(t, ctx, chromedp.Navigate(h.http.URL+"/console/topics"), chromedp.WaitVisible(chromedp.CSS(".topic")))
	shot(t, ctx, "topics")
	do(t, ctx, chromedp.Navigate(h.http.URL+"/console/"), chromedp.WaitVisible(chromedp.CSS(".dest .chart")))
	shot(t, ctx, "overview")
	// The stylesheet, htmx and its SSE extension all loaded from the binary (the CSP allows only 'self').
	if n := eval[int](t, ctx, `performance.getEntriesByType("resource").filter(e => e.name.includes("/console/static/")).length`); n < 3 {
		t.Fatalf("the page loaded %d static files, want the stylesheet, htmx and its SSE extension", n)
	}
}

// TestBrowserNarrow looks at the overview at half a laptop screen.
func TestBrowserNarrow(t *testing.T) {
	h := newHarness(t)
	h.publish("case.status_updated", "", `{"case": {"id": "c-0"}}`)
	h.waitFor("the delivery", func() bool { return h.hook.count() == 1 })
	ctx := browser(t, 700, 900)
	signInBrowser(t, ctx, h, adminKey)
	if w := eval[int](t, ctx, `document.documentElement.scrollWidth`); w > 700 {
		t.Fatalf("the overview is %dpx wide at a 700px window", w)
	}
	shot(t, ctx, "overview-narrow")
}

func TestBrowserPortal(t *testing.T) {
	h := newHarness(t)
	globexEvent := h.publish("order.created", "globex", `{"order": {"id": "g-1"}}`)
	acmeEvent := h.publish("order.created", "acme", `{"order": {"id": "a-1"}}`)
	h.waitFor("deliveries", func() bool { return h.acme.count() == 1 && h.globex.count() == 1 })
	st, body := h.apiPost("/v1/portal-links", adminKey, `{"tenant": "acme", "ttl": "5m"}`)
	if st != http.StatusCreated {
		t.Fatalf("portal link: %d %v", st, body)
	}
	ctx := browser(t, 1280, 900)
	// The link's page moves on to the overview by itself.
	do(t, ctx, chromedp.Navigate(body["url"].(string)),
		chromedp.WaitVisible(chromedp.CSS(`nav a[aria-current="page"][href="/console/"]`)))
	if got := text(t, ctx, ".who"); !strings.Contains(got, "tenant acme") {
		t.Fatalf("portal session: %q", got)
	}
	shot(t, ctx, "portal")
	for _, path := range []string{"/console/", "/console/events", "/console/destinations"} {
		do(t, ctx, chromedp.Navigate(h.http.URL+path), chromedp.WaitVisible(chromedp.CSS("main h1")))
		html := eval[string](t, ctx, `document.body.innerText`)
		if strings.Contains(html, "globex") || strings.Contains(html, globexEvent) || strings.Contains(html, "yaml-hook") {
			t.Fatalf("%s shows another tenant's things to the acme portal:\n%s", path, html)
		}
		if path == "/console/events" && !strings.Contains(html, acmeEvent) {
			t.Fatalf("the acme portal does not see its own event")
		}
	}
	do(t, ctx, chromedp.Navigate(h.http.URL+"/console/events/"+globexEvent), chromedp.WaitVisible(chromedp.CSS("main h1")))
	if got := text(t, ctx, "main h1"); !strings.Contains(got, "404") {
		t.Fatalf("globex's event in the acme portal: %q", got)
	}
	// Even a crafted request from the page cannot act on globex's destination.
	status := eval[int](t, ctx, `fetch("/console/destinations/`+h.destID("globex-hook")+`/disable", {method: "POST",
		headers: {"X-CSRF-Token": document.querySelector('input[name="csrf"]').value}}).then(r => r.status)`)
	if status != http.StatusNotFound {
		t.Fatalf("acme portal disabling globex's destination: %d", status)
	}
}

func TestBrowserReader(t *testing.T) {
	h := newHarness(t)
	id := h.publish("case.status_updated", "", `{"case": {"id": "c-1"}}`)
	h.waitFor("the delivery", func() bool { return h.hook.count() == 1 })
	ctx := browser(t, 1280, 900)
	signInBrowser(t, ctx, h, readerKey)
	hook := h.destID("yaml-hook")
	for _, path := range []string{"/console/", "/console/events/" + id, "/console/destinations/" + hook} {
		do(t, ctx, chromedp.Navigate(h.http.URL+path), chromedp.WaitVisible(chromedp.CSS("main h1")))
		n := eval[int](t, ctx, `document.querySelectorAll('main form[method="post"], main a[href$="/edit"], main a[href$="/replay"], main a[href$="/new"]').length`)
		if n != 0 {
			t.Fatalf("%s shows %d action controls to a reader", path, n)
		}
	}
	shot(t, ctx, "reader-destination")
	status := eval[int](t, ctx, `fetch("/console/destinations/`+hook+`/disable", {method: "POST",
		headers: {"X-CSRF-Token": document.querySelector('input[name="csrf"]').value}}).then(r => r.status)`)
	if status != http.StatusForbidden {
		t.Fatalf("a reader's disable: %d", status)
	}
	if v, _ := h.mgr.Get("yaml-hook", ""); !v.Enabled {
		t.Fatal("the reader disabled the destination")
	}
}
