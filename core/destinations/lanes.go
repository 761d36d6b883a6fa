package destinations

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"

	"github.com/sluicehq/sluice/core/config"
	"github.com/sluicehq/sluice/core/dispatch"
	"github.com/sluicehq/sluice/core/event"
	"github.com/sluicehq/sluice/core/netguard"
	"github.com/sluicehq/sluice/core/store"
	"github.com/sluicehq/sluice/sinks"
	"github.com/sluicehq/sluice/sinks/webhook"
)

// Lanes builds the dispatcher lane of every destination, whatever its source (YAML, API, per-run): its sink,
// dialling through the SSRF guard, its delivery policy and its transform hook.
type Lanes struct {
	net       *netguard.Dialer // destinations: delivery.network.allow_cidrs and proxy
	runs      *netguard.Dialer // per-run subscriptions: intake.inline_subscriptions.allow_cidrs, same proxy
	userAgent string
}

// NewLanes returns a lane builder whose sinks dial through guard and introduce themselves as userAgent
// ("Sluice/<version>"; empty leaves each sink's default). Per-run subscriptions get a guard that allows
// nothing extra until SetNetwork gives them their own allow list.
func NewLanes(guard *netguard.Guard, userAgent string) *Lanes {
	return &Lanes{net: netguard.NewDialer(guard, nil),
		runs:      netguard.NewDialer(netguard.New(nil).Named(runsSetting), nil),
		userAgent: userAgent}
}

const runsSetting = "intake.inline_subscriptions.allow_cidrs"

// SetNetwork sets the network policies before any lane is built: dest for destinations, runs for per-run
// subscriptions (whose guard has its own allow list and names it in refusals).
func (l *Lanes) SetNetwork(dest, runs *netguard.Dialer) {
	l.net = dest
	l.runs = netguard.NewDialer(runs.Guard().Named(runsSetting), runs.Proxy())
}

// Build makes the lane of a validated destination. reg is the registry of the config in force (built-in
// sinks plus the config's plugins).
func (l *Lanes) Build(ctx context.Context, reg *sinks.Registry, d *config.Destination, pol dispatch.Policy) (dispatch.Destination, error) {
	spec, ok := reg.Lookup(d.Type)
	if !ok {
		return dispatch.Destination{}, fmt.Errorf("sink type %q is not available", d.Type)
	}
	sink, err := spec.New(ctx, d.SinkConfig, sinks.Env{
		Destination: d.Name, Dial: l.net.DialContext, Network: l.net, UserAgent: l.userAgent, Timeout: pol.Timeout,
	})
	if err != nil {
		return dispatch.Destination{}, err
	}
	// Attempt errors are stored, logged and shown by the API: none may quote a secret of the config.
	sink = sinks.Scrub(sink, d.SinkConfig)
	return dispatch.Destination{Name: d.Name, Sink: sink, Policy: pol, Prepare: prepareFor(d), Ordered: d.OrderingKey != ""}, nil
}

// Vet refuses an API webhook destination whose URL the SSRF guard would refuse, at create rather than at its
// first delivery. The error is a *sinks.FieldError naming config.url.
func (l *Lanes) Vet(d *config.Destination) error {
	if wc, ok := d.SinkConfig.(*webhook.Config); ok {
		if err := checkURL(l.net.Guard(), wc.URL); err != nil {
			return &sinks.FieldError{Path: "config.url", Msg: err.Error()}
		}
	}
	return nil
}

// SubscriptionSink builds the webhook sink of a per-run subscription: signed with its secret when it has
// one, and always dialling through the SSRF guard. An IP-literal URL the guard refuses is refused here, at
// registration.
func (l *Lanes) SubscriptionSink(ctx context.Context, sub store.Subscription, pol dispatch.Policy) (sinks.Sink, error) {
	wc := webhook.NewConfig()
	wc.URL = sub.URL
	if sub.Secret != "" {
		wc.Secrets = []string{sub.Secret}
	} else {
		wc.Signing = webhook.SigningNone
	}
	if err := wc.Validate(); err != nil {
		return nil, errors.New(strings.ReplaceAll(err.Error(), "secrets[0]", "secret"))
	}
	if err := checkURL(l.runs.Guard(), sub.URL); err != nil {
		return nil, err
	}
	s, err := webhook.New(ctx, wc, sinks.Env{Destination: sub.Name, Dial: l.runs.DialContext, Network: l.runs,
		UserAgent: l.userAgent, Timeout: pol.Timeout})
	if err != nil {
		return nil, err
	}
	return sinks.Scrub(s, wc), nil
}

// checkURL refuses a URL whose host is an IP literal the SSRF guard refuses (names are checked when dialled,
// after DNS, where rebinding cannot get around it).
func checkURL(g *netguard.Guard, raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return nil // the sink's own validation has said why
	}
	if ip, err := netip.ParseAddr(strings.Trim(u.Hostname(), "[]")); err == nil {
		return g.Check(ip)
	}
	return nil
}

// prepareFor returns the dispatcher hook that applies a destination's transform (nil without one). The result
// replaces what the destination receives (event.Body); an error fails the delivery permanently with the reason.
func prepareFor(d *config.Destination) func(*event.Event) error {
	tr := d.TransformExpr
	if tr == nil {
		return nil
	}
	return func(ev *event.Event) error {
		doc, err := ev.Doc()
		if err != nil {
			return fmt.Errorf("transform: event data is not JSON: %v", err)
		}
		body, err := tr.Apply(doc)
		if err != nil {
			return err
		}
		ev.Body = body
		return nil
	}
}
