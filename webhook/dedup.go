package webhook

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"sync"
)

// EventIDHeader is the request header in which PandaDoc identifies a
// delivery, the same across its automatic and manual retries. It is not
// signed.
const EventIDHeader = "X-PandaDoc-Webhook-Event-Id"

// maxEventID bounds the event IDs used as dedup keys; PandaDoc's are
// UUIDs (36 bytes). A longer header is not PandaDoc's and is ignored.
const maxEventID = 64

// DeliveryKeys returns the keys under which a Dedup records a verified
// delivery: "body:" and the hexadecimal SHA-256 of the body, the signed
// content, and "id:" and the X-PandaDoc-Webhook-Event-Id header, when
// the request has one (of at most 64 bytes). The handler of a queue or of
// a framework that calls Verify itself can use them with its own Dedup.
//
// A delivery is a duplicate when any of its keys is known. The event ID
// catches PandaDoc's retries even if a retry's body were rendered anew;
// the digest catches a replay of a signed body whatever event ID, or
// none, the replay carries, since the ID is not signed. Two deliveries
// with the same body are one, whatever their IDs.
func DeliveryKeys(r *http.Request, body []byte) []string {
	sum := sha256.Sum256(body)
	keys := []string{"body:" + hex.EncodeToString(sum[:])}
	if id := r.Header.Get(EventIDHeader); id != "" && len(id) <= maxEventID {
		keys = append(keys, "id:"+id)
	}
	return keys
}

// A ClaimState is what Dedup.Claim found.
type ClaimState int

const (
	// Fresh means no delivery with any of the keys is known: the keys
	// are now claimed, and the caller processes the delivery and then
	// calls Done or Release.
	Fresh ClaimState = iota

	// Running means a delivery with one of the keys is being processed.
	Running

	// Finished means a delivery with one of the keys was processed.
	Finished
)

// A Dedup remembers deliveries, so that a Verifier's Handler runs its
// next handler once per delivery. It works in two phases: Claim before
// next runs, then Done after next answered 2xx, or Release after
// anything else (another status, a panic), so that PandaDoc's retry
// runs next again.
//
// Claim must be atomic: of concurrent claims with a common key, one
// finds Fresh. It claims all the keys or, when it does not answer Fresh,
// none: a replay that brings a new event ID does not record that ID.
//
// MemoryDedup serves one process. A fleet behind a load balancer needs
// one shared by its replicas (such as Redis SET NX on every key).
type Dedup interface {
	Claim(ctx context.Context, keys []string) (ClaimState, error)
	Done(ctx context.Context, keys []string) error
	Release(ctx context.Context, keys []string) error
}

// DefaultDedupMax is how many processed deliveries a MemoryDedup with a
// zero Max remembers.
const DefaultDedupMax = 10000

// MemoryDedup is a Dedup in memory, for one process. It remembers the
// last Max processed deliveries, forgetting the oldest first, so that a
// replay of an older one is let through again: Max bounds the memory.
// Deliveries being processed are not counted and never forgotten.
//
// The zero value is ready to use. Its methods are safe for concurrent
// use by multiple goroutines. They never fail.
type MemoryDedup struct {
	// Max bounds the processed deliveries remembered; zero or less
	// means DefaultDedupMax.
	Max int

	mu    sync.Mutex           // guards the fields below
	keys  map[string]*delivery // every key of a claimed or processed delivery
	order []*delivery          // processed deliveries, oldest first, from head on
	head  int                  // index in order of the oldest one remembered
}

var _ Dedup = (*MemoryDedup)(nil)

// delivery is one claimed delivery of a MemoryDedup.
type delivery struct {
	keys     []string
	finished bool // Done was called
}

// Claim implements Dedup.
func (m *MemoryDedup) Claim(_ context.Context, keys []string) (ClaimState, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	state := Fresh
	for _, k := range keys {
		if d := m.keys[k]; d != nil {
			if d.finished {
				return Finished, nil
			}
			state = Running
		}
	}
	if state != Fresh {
		return state, nil
	}
	if m.keys == nil {
		m.keys = make(map[string]*delivery)
	}
	d := &delivery{keys: append([]string(nil), keys...)}
	for _, k := range keys {
		m.keys[k] = d
	}
	return Fresh, nil
}

// Done implements Dedup. It does nothing unless keys were claimed
// together and are not done yet.
func (m *MemoryDedup) Done(_ context.Context, keys []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.claimed(keys)
	if d == nil {
		return nil
	}
	d.finished = true
	m.order = append(m.order, d)
	limit := m.Max
	if limit <= 0 {
		limit = DefaultDedupMax
	}
	for len(m.order)-m.head > limit {
		old := m.order[m.head]
		m.order[m.head] = nil
		m.head++
		for _, k := range old.keys {
			if m.keys[k] == old {
				delete(m.keys, k)
			}
		}
	}
	if m.head > len(m.order)/2 {
		m.order = append(m.order[:0], m.order[m.head:]...)
		m.head = 0
	}
	return nil
}

// Release implements Dedup. It does nothing unless keys were claimed
// together and are not done yet.
func (m *MemoryDedup) Release(_ context.Context, keys []string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.claimed(keys)
	if d == nil {
		return nil
	}
	for _, k := range d.keys {
		delete(m.keys, k)
	}
	return nil
}

// Len returns how many deliveries m knows, being processed or processed.
func (m *MemoryDedup) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	seen := make(map[*delivery]bool)
	for _, d := range m.keys {
		seen[d] = true
	}
	return len(seen)
}

// claimed returns the unfinished delivery that keys were claimed for,
// or nil. m.mu must be held.
func (m *MemoryDedup) claimed(keys []string) *delivery {
	if len(keys) == 0 {
		return nil
	}
	d := m.keys[keys[0]]
	if d == nil || d.finished {
		return nil
	}
	for _, k := range keys[1:] {
		if m.keys[k] != d {
			return nil
		}
	}
	return d
}
