package match_test

import (
	"testing"

	"github.com/sluicehq/sluice/core/match"
)

// Sinks keep the compiler from discarding the benchmarked calls.
var (
	sinkBool   bool
	sinkFilter *match.Filter
)

func BenchmarkTopicsMatch(b *testing.B) {
	ts, err := match.CompileTopics([]string{"case.created", "case.closed", "invoice.*", "user.profile.*"})
	if err != nil {
		b.Fatal(err)
	}
	var many []string
	for _, p := range []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"} {
		many = append(many, p+".*")
	}
	many = append(many, "case.*")
	tsMany, err := match.CompileTopics(many)
	if err != nil {
		b.Fatal(err)
	}
	all, _ := match.CompileTopics([]string{"*"})
	for _, bc := range []struct {
		name  string
		ts    match.Topics
		topic string
	}{
		{"all", all, "case.status_updated"},
		{"exact", ts, "case.created"},
		{"prefix", ts, "user.profile.updated"},
		{"miss", ts, "order.shipped"},
		{"13prefixes/hit", tsMany, "case.status_updated"},
		{"13prefixes/miss", tsMany, "order.shipped"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sinkBool = bc.ts.Match(bc.topic)
			}
		})
	}
}

const designFilter = `{data: {case: {status: {$in: [approved, rejected]}}}}`

const richFilter = `
topic: {$startsWith: case.}
tenant: {$nin: [blocked, suspended]}
data:
  amount: {$gt: 10, $lte: 100}
  roles: [reviewer]
  case:
    status: {$in: [approved, rejected]}
$or:
  - {data: {name: {$regex: "^Ada"}}}
  - {metadata: {source: erp}}
`

func BenchmarkFilterMatch(b *testing.B) {
	for _, fc := range []struct{ name, filter string }{
		{"design", designFilter},
		{"roles", `{data: {roles: [reviewer]}}`},
		{"rich", richFilter},
	} {
		f := mustCompileYAML(b, fc.filter)
		for _, useNumber := range []bool{false, true} {
			doc := decodeDoc(b, testDoc, useNumber)
			name := fc.name + "/float64"
			if useNumber {
				name = fc.name + "/json.Number"
			}
			b.Run(name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					sinkBool = f.Match(doc)
				}
			})
		}
	}
}

func BenchmarkCompile(b *testing.B) {
	for _, fc := range []struct{ name, filter string }{
		{"design", designFilter},
		{"rich", richFilter},
	} {
		v := fromYAML(b, fc.filter)
		b.Run(fc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				f, err := match.Compile(v)
				if err != nil {
					b.Fatal(err)
				}
				sinkFilter = f
			}
		})
	}
}

var sinkMatches []match.Match

// Routing one event to ten destinations that all take it (the bench's fanout10).
func BenchmarkRouteFanout10(b *testing.B) {
	all, _ := match.CompileTopics([]string{"*"})
	var routes []match.Route
	for _, name := range []string{"r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9"} {
		routes = append(routes, match.Route{Name: name, Topics: all})
	}
	r := match.NewRouter(routes)
	ev := &match.Event{ID: "evt_1", Topic: "bench.event"}
	b.ReportAllocs()
	for b.Loop() {
		sinkMatches = r.Route(ev)
	}
}
