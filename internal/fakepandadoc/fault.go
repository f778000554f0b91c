package fakepandadoc

import (
	"net/http"
	"time"
)

// A FaultKind says what a Fault makes the token endpoint do; see
// pandadoctest.FaultKind, whose values it shares.
type FaultKind int

// The kinds of faults, as pandadoctest documents them.
const (
	KindSuccess FaultKind = iota
	KindRespond
	KindHang
	KindReset
	KindTruncated
	KindOversized
)

// A Fault scripts one answer of the token endpoint; see
// pandadoctest.Fault, whose fields it shares but Rewrite. A Fault other
// than KindSuccess replaces the grant unless AfterGrant is set.
type Fault struct {
	Kind        FaultKind
	Status      int         // of a KindRespond answer; 0 means 500
	ContentType string      // of a KindRespond answer; "" means text/plain
	Header      http.Header // extra headers of a KindRespond answer
	Body        string      // of a KindRespond answer
	Size        int         // body size of a KindOversized answer; 0 means 10 MiB
	Delay       time.Duration
	AfterGrant  bool

	// Rewrite, if set, replaces the grant's answer: the grant is carried
	// out (a refresh token rotated, a reuse detected, as without a
	// fault), then Rewrite gets its answer as a KindRespond Fault (status,
	// Content-Type, headers, JSON body) and returns the Fault to answer
	// instead, whose AfterGrant, Delay and Rewrite are ignored; a
	// returned KindSuccess sends the grant's answer unchanged. Kind and
	// the fields but Delay are ignored. Rewrite runs without the server's
	// lock, so it may call the Server's methods.
	Rewrite func(answer Fault) Fault
}

// Status returns a Fault that answers code with its status text as a
// plain-text body.
func Status(code int) Fault {
	return Body(code, "text/plain; charset=utf-8", http.StatusText(code)+"\n")
}

// Body returns a Fault that answers code with the given Content-Type and
// body.
func Body(code int, contentType, body string) Fault {
	return Fault{Kind: KindRespond, Status: code, ContentType: contentType, Body: body}
}

// defaultOversize is the body size of a KindOversized fault with no Size.
const defaultOversize = 10 << 20

// pandaDocExpiresIn is the lifetime PandaDoc announces, one year less one
// second, which a KindTruncated answer carries.
const pandaDocExpiresIn = 31535999
