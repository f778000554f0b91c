package pandadocauth

import (
	"sync/atomic"
	"time"

	"golang.org/x/oauth2"
)

// The 401 policy: what a rejection of a token by the API does.
//
// A rejected token is invalidated by compare-and-swap on its generation,
// so a late 401 cannot throw away a newer token, and the next caller
// refreshes. One exception: when token after token comes from the
// endpoint and is rejected without one ever working (a suspended
// account, a grant revoked in a way the endpoint does not see), a refresh
// per request would hammer the endpoint. Such a token is kept for a
// back-off that doubles from 1 second up to 1 minute after it was
// obtained, and the 401 is returned meanwhile. Tokens loaded from the
// Store or Initial are never kept: their first rejection is the usual
// sign of a revoked token, and it is answered with a refresh at once.

// rejections is the 401 policy's memory.
type rejections struct {
	// worked is the highest generation the API accepted. It is read on
	// every response.
	worked atomic.Uint32

	// n is how many tokens were rejected in a row without one working.
	n atomic.Int32
}

// rejectionBackoff is how long a token is kept after n tokens in a row
// were rejected without one working.
func rejectionBackoff(n int) time.Duration {
	return min(minRejectionBackoff<<min(n-1, 6), maxRejectionBackoff)
}

// accepted records that the API accepted ct's token.
func (r *rejections) accepted(ct *snapshot) {
	for {
		w := r.worked.Load()
		if w >= ct.gen {
			return
		}
		if r.worked.CompareAndSwap(w, ct.gen) {
			break
		}
	}
	r.n.Store(0)
}

// rejected handles a 401 to a request that carried ct's token. It
// invalidates the token if cache still serves it, and reports whether a
// new token is worth waiting for (false only while the back-off above
// keeps the token) and whether it invalidated it. now reads the clock.
func (r *rejections) rejected(cache *atomic.Pointer[snapshot], ct *snapshot, now func() time.Time) (retry, invalidated bool) {
	for {
		cur := cache.Load()
		switch {
		case cur == nil:
			return false, false
		case cur.gen != ct.gen:
			return cur.gen > ct.gen, false // a newer token is served already
		case cur.invalid:
			return true, false // rejected already; the next caller refreshes
		}
		if ct.from == fromEndpoint && r.worked.Load() < ct.gen {
			if n := int(r.n.Load()); n > 0 && now().Before(issued(ct.tok).Add(rejectionBackoff(n))) {
				return false, false
			}
		}
		next := *cur
		next.invalid = true
		if cache.CompareAndSwap(cur, &next) {
			r.n.Add(1)
			return true, true
		}
	}
}

// issued is when the endpoint issued t, derived from its expiry and
// lifetime; zero when it has no lifetime (then no back-off keeps it).
func issued(t *oauth2.Token) time.Time {
	if t.ExpiresIn <= 0 || t.Expiry.IsZero() {
		return time.Time{}
	}
	return t.Expiry.Add(-time.Duration(t.ExpiresIn) * time.Second)
}
