package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gopandadoc/pandadocauth"
)

// demoMetrics counts what a pandadocauth client did, through the hooks of
// a pandadocauth.Observer: the numbers a metrics system would receive.
// The zero value is ready to use; its methods are safe for concurrent
// use.
type demoMetrics struct {
	mu          sync.Mutex     // guards the fields below
	refreshes   map[string]int // flights ended, by "outcome/reason"
	attempts    int            // token-endpoint requests, summed over flights
	waiters     int            // callers that waited for a flight, summed
	joins       int            // RefreshJoin calls
	longest     time.Duration  // of a flight
	rejected    map[string]int // 401s from the API, by replay outcome
	invalidated int            // 401s that invalidated the token served
	saveFailed  int            // Store.Save failures
	saveRetried int            // of which retries
	lockWaits   int            // Locker.Lock calls answered
}

// observer returns the Observer that feeds m.
func (m *demoMetrics) observer() *pandadocauth.Observer {
	return &pandadocauth.Observer{
		RefreshJoin: func(_, _ context.Context) {
			m.mu.Lock()
			m.joins++
			m.mu.Unlock()
		},
		RefreshDone: func(_ context.Context, info pandadocauth.RefreshDoneInfo) {
			m.mu.Lock()
			defer m.mu.Unlock()
			if m.refreshes == nil {
				m.refreshes = make(map[string]int)
			}
			m.refreshes[info.Outcome.String()+"/"+info.Reason.String()]++
			m.attempts += info.Attempts
			m.waiters += info.Waiters
			m.longest = max(m.longest, info.Duration)
		},
		Rejected: func(_ context.Context, info pandadocauth.RejectedInfo) {
			m.mu.Lock()
			defer m.mu.Unlock()
			if m.rejected == nil {
				m.rejected = make(map[string]int)
			}
			m.rejected[info.Replay.String()]++
			if info.Invalidated {
				m.invalidated++
			}
		},
		SaveFailed: func(_ context.Context, info pandadocauth.SaveFailedInfo) {
			m.mu.Lock()
			defer m.mu.Unlock()
			m.saveFailed++
			if info.Retry {
				m.saveRetried++
			}
		},
		LockWaited: func(_ context.Context, _ pandadocauth.LockWaitedInfo) {
			m.mu.Lock()
			m.lockWaits++
			m.mu.Unlock()
		},
	}
}

// String is one line: every counter, the maps sorted by key.
func (m *demoMetrics) String() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return fmt.Sprintf("refreshes: %s; attempts %d; waiters %d (joins %d); longest %s; 401s: %s (invalidated %d); save failures %d (retries %d); lock waits %d",
		formatCounts(m.refreshes), m.attempts, m.waiters, m.joins, formatWall(m.longest),
		formatCounts(m.rejected), m.invalidated, m.saveFailed, m.saveRetried, m.lockWaits)
}

// formatCounts writes counts as "a 1, b 2", sorted by key, or "none".
func formatCounts(counts map[string]int) string {
	if len(counts) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, counts[k])
	}
	return strings.Join(parts, ", ")
}

// printMetrics writes the metrics of each phase's pandadocauth client.
func printMetrics(w io.Writer, rows []metricsRow) {
	fmt.Fprintf(w, "\nMetrics of the pandadocauth clients, counted with a pandadocauth.Observer (refreshes by\n"+
		"outcome/reason; 401s by what became of the replay):\n")
	for _, r := range rows {
		fmt.Fprintf(w, "  %-10s  %s\n", r.phase, r.metrics)
	}
}

// metricsRow is the metrics of one phase.
type metricsRow struct {
	phase   string
	metrics *demoMetrics
}
