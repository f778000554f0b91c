package pandadocauth

import "time"

// The events of a Limiter, for Observer.LimitWait, LimitWaited, Throttled
// and Retried. Grant is the Key the request counts against (the grant
// key, by default).

// LimitWaitInfo describes a request that starts waiting for its slot.
type LimitWaitInfo struct {
	Grant   string
	Class   Class
	Wait    time.Duration // until the slot
	Attempt int           // the attempt that waits: 1 for the first
}

// LimitWaitedInfo describes a wait for a slot that ended.
type LimitWaitedInfo struct {
	Grant   string
	Class   Class
	Wait    time.Duration // the wait LimitWait announced
	Waited  time.Duration // how long it lasted
	Attempt int
	Err     error // nil if the slot came; else the context's error: the request was not sent
}

// HintSource is where the wait a 429 asked for came from.
type HintSource uint8

// The sources of ThrottledInfo.Hint.
const (
	HintNone       HintSource = iota // the 429 named no wait
	HintRetryAfter                   // its Retry-After header
	HintBody                         // its body: "Expected available in N seconds."
)

var hintNames = [...]string{"none", "retry_after", "body"}

// String returns the source as a metric attribute value, such as
// "body".
func (h HintSource) String() string {
	if int(h) < len(hintNames) {
		return hintNames[h]
	}
	return "unknown"
}

// ThrottledInfo describes a 429 from PandaDoc.
type ThrottledInfo struct {
	Grant      string
	Class      Class
	Hint       time.Duration // the wait PandaDoc asked for, at most a window; 0 with HintNone
	HintSource HintSource
	Retried    bool          // the request is sent again; else the 429 reaches the caller
	Wait       time.Duration // with Retried: until the retry's slot
}

// RetryReason is why a Limiter sends a request again.
type RetryReason uint8

// The reasons of RetriedInfo.
const (
	RetryThrottled RetryReason = iota // PandaDoc answered 429
	RetryStatus                       // a 5xx to an idempotent request
	RetryNetwork                      // a network error of an idempotent request
	RetryUnsent                       // a network error before the request was written
)

var retryNames = [...]string{"throttled", "status", "network", "unsent"}

// String returns the reason as a metric attribute value, such as
// "status".
func (r RetryReason) String() string {
	if int(r) < len(retryNames) {
		return retryNames[r]
	}
	return "unknown"
}

// RetriedInfo describes a request sent again.
type RetriedInfo struct {
	Grant   string
	Class   Class
	Attempt int // the attempt about to be sent: 2 for the first retry
	Reason  RetryReason
	Status  int           // the status answered, 0 after a network error
	Err     error         // the network error, nil after an answer
	Wait    time.Duration // until the retry's slot
}
