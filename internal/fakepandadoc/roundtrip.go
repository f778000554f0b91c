package fakepandadoc

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
)

// ErrDropped is the error of a RoundTrip whose request the server
// dropped without an answer (KindHang, KindReset, or the gate or a delay
// ended by Close), when the request's own context has not ended.
var ErrDropped = errors.New("fakepandadoc: connection dropped without an answer")

// RoundTrip serves req in memory, without a network, and returns the
// server's answer: a Server is an http.RoundTripper, and its RoundTrip
// an httpmock.Responder. A request the server drops returns the
// request context's error if it has ended, else ErrDropped. It always
// closes req's body, and never modifies req.
func (s *Server) RoundTrip(req *http.Request) (resp *http.Response, err error) {
	r := req.Clone(req.Context()) // r.Body is req.Body
	if r.Body == nil {
		r.Body = http.NoBody
	}
	defer r.Body.Close()
	rec := httptest.NewRecorder()
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				panic(v)
			}
			resp = nil
			if err = req.Context().Err(); err == nil {
				err = ErrDropped
			}
		}
	}()
	s.ServeHTTP(rec, r)
	resp = rec.Result()
	resp.Request = req
	return resp, nil
}

var _ http.RoundTripper = (*Server)(nil)

// connKey is the request context key of the connection a request came
// on.
type connKey struct{}

// ConnContext records c in ctx, for an http.Server's ConnContext: a
// fault that must drop a connection at once (Close during an oversized
// answer) finds it there.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// closeConn closes the network connection that r came on, under its TLS
// layer if any: unlike closing the TLS connection, which first sends a
// close_notify alert and may wait seconds for a client that reads
// nothing, it returns at once.
func closeConn(r *http.Request) {
	c, ok := r.Context().Value(connKey{}).(net.Conn)
	if !ok {
		return
	}
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	c.Close()
}
