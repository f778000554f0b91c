package pandadocauth

import (
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	testHookJoined = joins.add
	goleak.VerifyTestMain(m)
}

// joins counts, per source, the callers that have joined a flight, so
// that tests can wait until callers are waiting instead of sleeping.
var joins = &joinCounter{n: map[*TokenSource]int{}}

type joinCounter struct {
	mu   sync.Mutex // guards n
	cond sync.Cond
	n    map[*TokenSource]int
}

func (j *joinCounter) add(s *TokenSource) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.n[s]++
	if j.cond.L == nil {
		j.cond.L = &j.mu
	}
	j.cond.Broadcast()
}

// sources returns the sources that have had callers join a flight.
func (j *joinCounter) sources() map[*TokenSource]bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	known := make(map[*TokenSource]bool, len(j.n))
	for s := range j.n {
		known[s] = true
	}
	return known
}

// forgetAllBut drops the counts of the sources not in known, so that a
// test measuring the heap does not count what the counter keeps alive.
func (j *joinCounter) forgetAllBut(known map[*TokenSource]bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	kept := make(map[*TokenSource]int, len(known))
	for s, n := range j.n {
		if known[s] {
			kept[s] = n
		}
	}
	j.n = kept
}

// waitForWaiters waits until n callers in all have joined a flight of ts.
func waitForWaiters(t *testing.T, ts *TokenSource, n int) {
	t.Helper()
	j := joins
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.cond.L == nil {
		j.cond.L = &j.mu
	}
	for j.n[ts] < n {
		j.cond.Wait()
	}
}
