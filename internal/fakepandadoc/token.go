package fakepandadoc

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// maxFormBytes bounds the body of a token request.
const maxFormBytes = 1 << 20

// serveAuthorize is GET /oauth2/authorize. It approves (or denies) at
// once, as if the user had clicked, and redirects to the redirect URI.
func (s *Server) serveAuthorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("client_id") != s.opts.ClientID {
		http.Error(w, "Invalid client_id.", http.StatusBadRequest)
		return
	}
	redirect := q.Get("redirect_uri")
	if !s.redirectAllowed(redirect) {
		http.Error(w, "Invalid redirect_uri: it does not match the application's redirect URI.", http.StatusBadRequest)
		return
	}
	if q.Get("response_type") != "code" {
		http.Error(w, "Invalid response_type: only code is supported.", http.StatusBadRequest)
		return
	}
	u, err := url.Parse(redirect)
	if err != nil {
		http.Error(w, "Invalid redirect_uri.", http.StatusBadRequest)
		return
	}
	ac := &authCode{redirect: redirect, challenge: q.Get("code_challenge"), challengeMethod: q.Get("code_challenge_method")}
	if ac.challenge != "" || ac.challengeMethod != "" {
		if ac.challengeMethod == "" {
			ac.challengeMethod = "plain" // RFC 7636 section 4.3
		}
		if ac.challengeMethod != "S256" && ac.challengeMethod != "plain" {
			http.Error(w, "Invalid code_challenge_method: only S256 and plain are supported.", http.StatusBadRequest)
			return
		}
		if !validPKCEString(ac.challenge) {
			http.Error(w, "Invalid code_challenge: it must be 43 to 128 characters of A-Z, a-z, 0-9, \"-._~\".", http.StatusBadRequest)
			return
		}
	}

	s.mu.Lock()
	deny := s.denyConsent
	s.mu.Unlock()
	v := u.Query()
	if deny {
		v.Set("error", "access_denied")
	} else {
		code := randomToken()
		s.mu.Lock()
		s.codes[code] = ac
		s.mu.Unlock()
		v.Set("code", code)
	}
	if q.Has("state") {
		v.Set("state", q.Get("state"))
	}
	u.RawQuery = v.Encode()
	http.Redirect(w, r, u.String(), http.StatusFound)
}

// redirectAllowed reports whether the authorization endpoint accepts
// redirect as the redirect URI: the registered one exactly or, when that
// is an http URL on a loopback IP address, the same URL on any port, as
// RFC 8252 section 7.3 requires for native applications.
func (s *Server) redirectAllowed(redirect string) bool {
	if redirect == s.opts.RedirectURL {
		return true
	}
	reg, err := url.Parse(s.opts.RedirectURL)
	if err != nil || reg.Scheme != "http" || !isLoopbackIP(reg.Hostname()) {
		return false
	}
	got, err := url.Parse(redirect)
	if err != nil || got.User != nil || got.Fragment != "" {
		return false
	}
	return got.Scheme == reg.Scheme && got.Hostname() == reg.Hostname() &&
		got.EscapedPath() == reg.EscapedPath() && got.RawQuery == reg.RawQuery
}

// isLoopbackIP reports whether host is a loopback IP literal, such as
// 127.0.0.1 or ::1.
func isLoopbackIP(host string) bool {
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// validPKCEString reports whether v has the form of a PKCE code verifier
// or plain challenge (RFC 7636 section 4.1): 43 to 128 unreserved
// characters.
func validPKCEString(v string) bool {
	if len(v) < 43 || len(v) > 128 {
		return false
	}
	for _, c := range []byte(v) {
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9',
			c == '-', c == '.', c == '_', c == '~':
		default:
			return false
		}
	}
	return true
}

// pkceVerified reports whether verifier answers the challenge of ac.
func (ac *authCode) pkceVerified(verifier string) bool {
	if !validPKCEString(verifier) {
		return false
	}
	want := verifier
	if ac.challengeMethod == "S256" {
		sum := sha256.Sum256([]byte(verifier))
		want = base64.RawURLEncoding.EncodeToString(sum[:])
	}
	return subtle.ConstantTimeCompare([]byte(want), []byte(ac.challenge)) == 1
}

// serveToken is POST /oauth2/access_token: it counts the request, waits
// at the gate if HoldTokenRequests closed it, takes the next fault and
// either answers the grant or misbehaves.
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	form, problem := readForm(w, r)
	f, gate := s.arrive(form, r.Header)
	defer s.depart()
	if gate != nil {
		if !s.passGate(r.Context(), gate) {
			panic(http.ErrAbortHandler)
		}
		f = s.takeFault()
	}

	if f.Delay > 0 {
		t := time.NewTimer(f.Delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			panic(http.ErrAbortHandler)
		case <-s.closing.Done():
			t.Stop()
			panic(http.ErrAbortHandler)
		}
	}

	if f.Rewrite != nil {
		s.rewrite(w, r, f.Rewrite, form, problem)
		return
	}
	if f.Kind == KindSuccess {
		resp, terr := s.grant(form, problem)
		if terr != nil {
			WriteJSON(w, terr.status, terr)
			return
		}
		WriteJSON(w, http.StatusOK, resp)
		return
	}
	if f.AfterGrant {
		s.grant(form, problem)
	}
	s.misbehave(w, r, f)
}

// rewrite carries out the grant that form asks for and answers what
// rewrite makes of its answer; see Fault.Rewrite.
func (s *Server) rewrite(w http.ResponseWriter, r *http.Request, rewrite func(Fault) Fault, form url.Values, problem string) {
	status, v := http.StatusOK, any(nil)
	resp, terr := s.grant(form, problem)
	if terr != nil {
		status, v = terr.status, terr
	} else {
		v = resp
	}
	body, err := json.Marshal(v)
	if err != nil {
		panic("fakepandadoc: " + err.Error())
	}
	answer := Fault{
		Kind:        KindRespond,
		Status:      status,
		ContentType: "application/json",
		Header:      http.Header{"Cache-Control": {"no-store"}, "Pragma": {"no-cache"}},
		Body:        string(body),
	}
	f := rewrite(answer)
	if f.Kind == KindSuccess {
		f = answer
	}
	s.misbehave(w, r, f)
}

// readForm reads a token request's form body, or says what is wrong with
// it. Query parameters are not part of it: PandaDoc reads the client
// credentials and the grant from the body only.
func readForm(w http.ResponseWriter, r *http.Request) (form url.Values, problem string) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	// Read the whole body whatever happens, so that the server notices
	// when a client gives up on a request that a fault holds.
	defer io.Copy(io.Discard, r.Body)

	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return url.Values{}, "The request body must be application/x-www-form-urlencoded."
	}
	if err := r.ParseForm(); err != nil {
		return url.Values{}, "The request body is not a valid form."
	}
	return r.PostForm, ""
}

// arrive records and counts a token request, by its grant_type and, for the
// refresh_token grant, by the grant of its refresh token. If the gate is
// closed, it returns the gate, at which the request is now held, and the
// request takes its fault once past it; otherwise it takes its fault
// now, so that a request that has arrived has its fault.
func (s *Server) arrive(form url.Values, h http.Header) (Fault, chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	grantType := form.Get("grant_type")
	s.tokenRequests[grantType]++
	s.posts = append(s.posts, TokenPost{Form: cloneValues(form), Header: h.Clone(), At: s.now()})
	s.inFlight++
	s.maxInFlight = max(s.maxInFlight, s.inFlight)
	if grantType == "refresh_token" {
		if g := s.grants[form.Get("refresh_token")]; g != nil {
			g.tokenRequests++
		}
	}
	s.notifyLocked()
	if s.gate != nil {
		s.held++
		return Fault{}, s.gate
	}
	return s.takeFaultLocked(), nil
}

// depart counts a token request as answered, or given up.
func (s *Server) depart() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inFlight--
	s.notifyLocked()
}

// takeFault returns the fault a token request must suffer: the next
// queued one, else the FailAlways one, else the zero Fault.
func (s *Server) takeFault() Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.takeFaultLocked()
}

// takeFaultLocked is takeFault with s.mu held.
func (s *Server) takeFaultLocked() Fault {
	switch {
	case len(s.faults) > 0:
		f := s.faults[0]
		s.faults = s.faults[1:]
		return f
	case s.always != nil:
		return *s.always
	}
	return Fault{}
}

// tokenError is an RFC 6749 error answer of the token endpoint. Its
// description never includes a value the client sent.
type tokenError struct {
	status      int
	Code        string `json:"error"`
	Description string `json:"error_description"`
}

func invalidRequest(desc string) *tokenError {
	return &tokenError{http.StatusBadRequest, "invalid_request", desc}
}

func invalidGrant(desc string) *tokenError {
	return &tokenError{http.StatusBadRequest, "invalid_grant", desc}
}

func invalidClient(desc string) *tokenError {
	return &tokenError{http.StatusUnauthorized, "invalid_client", desc}
}

// grant carries out the grant that form asks for; problem is what
// readForm found wrong with the request.
func (s *Server) grant(form url.Values, problem string) (*tokenResponse, *tokenError) {
	if problem != "" {
		return nil, invalidRequest(problem)
	}
	for name, vs := range form {
		if len(vs) > 1 {
			return nil, invalidRequest("Parameter " + strconv.Quote(name) + " is repeated.")
		}
	}
	grantType := form.Get("grant_type")
	if grantType == "" {
		return nil, invalidRequest("Missing grant_type parameter.")
	}
	id, secret := form.Get("client_id"), form.Get("client_secret")
	if id == "" && secret == "" {
		return nil, invalidClient("Client credentials must be sent as client_id and client_secret in the request body.")
	}
	if subtle.ConstantTimeCompare([]byte(id), []byte(s.opts.ClientID)) != 1 ||
		subtle.ConstantTimeCompare([]byte(secret), []byte(s.opts.ClientSecret)) != 1 {
		return nil, invalidClient("Client authentication failed.")
	}

	switch grantType {
	case "authorization_code":
		code := form.Get("code")
		if code == "" {
			return nil, invalidRequest("Missing code parameter.")
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		ac, ok := s.codes[code]
		if !ok {
			return nil, invalidGrant("The authorization code is invalid, expired or already used.")
		}
		// A code is spent by any attempt to use it.
		delete(s.codes, code)
		if form.Has("redirect_uri") && form.Get("redirect_uri") != ac.redirect {
			return nil, invalidGrant("The redirect_uri does not match the authorization request.")
		}
		if ac.challenge != "" && !ac.pkceVerified(form.Get("code_verifier")) {
			return nil, invalidGrant("The code_verifier is missing or does not match the code_challenge.")
		}
		return s.mintLocked("", s.now()), nil

	case "refresh_token":
		rt := form.Get("refresh_token")
		if rt == "" {
			return nil, invalidRequest("Missing refresh_token parameter.")
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.refreshLocked(rt, s.now())
	}
	return nil, &tokenError{http.StatusBadRequest, "unsupported_grant_type", "The grant type is not supported."}
}

// misbehave answers as f says, in place of the token endpoint.
func (s *Server) misbehave(w http.ResponseWriter, r *http.Request, f Fault) {
	switch f.Kind {
	case KindHang:
		select {
		case <-r.Context().Done():
		case <-s.closing.Done():
		}
		panic(http.ErrAbortHandler)

	case KindReset:
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(http.ErrAbortHandler)
		}
		raw := conn
		if tc, ok := conn.(*tls.Conn); ok {
			raw = tc.NetConn()
		}
		if tcp, ok := raw.(*net.TCPConn); ok {
			// Closing with a zero linger sends RST instead of FIN.
			tcp.SetLinger(0)
		}
		raw.Close()

	case KindTruncated:
		full, _ := json.Marshal(&tokenResponse{
			AccessToken:  randomToken(),
			TokenType:    "Bearer",
			ExpiresIn:    pandaDocExpiresIn,
			Scope:        scope,
			RefreshToken: randomToken(),
		})
		body := full[:len(full)/2]
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		w.Write(body)

	case KindOversized:
		s.writeOversized(w, r, f.Size)

	default: // KindRespond, and kinds unknown to this version
		h := w.Header()
		for k, vs := range f.Header {
			h[k] = append([]string(nil), vs...)
		}
		ct := f.ContentType
		if ct == "" {
			ct = "text/plain; charset=utf-8"
		}
		h.Set("Content-Type", ct)
		h.Set("Content-Length", strconv.Itoa(len(f.Body)))
		status := f.Status
		if status == 0 {
			status = http.StatusInternalServerError
		}
		w.WriteHeader(status)
		io.WriteString(w, f.Body)
	}
}

// writeOversized answers 200 with a JSON object of n bytes, padded with
// spaces.
func (s *Server) writeOversized(w http.ResponseWriter, r *http.Request, n int) {
	if n <= 0 {
		n = defaultOversize
	}
	n = max(n, 2)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(n))
	w.WriteHeader(http.StatusOK)

	// A client that reads no further blocks the writes below; Close
	// unblocks them by closing the connection.
	defer context.AfterFunc(s.closing, func() { closeConn(r) })()

	if _, err := io.WriteString(w, "{"); err != nil {
		return
	}
	pad := []byte(strings.Repeat(" ", 32<<10))
	for left := n - 2; left > 0; {
		chunk := pad[:min(left, len(pad))]
		if _, err := w.Write(chunk); err != nil {
			return
		}
		left -= len(chunk)
	}
	io.WriteString(w, "}")
}

// WriteJSON answers status with v as JSON, never cached.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		panic("fakepandadoc: " + err.Error())
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(status)
	w.Write(body)
}

// authCode is the authorization request an unused code answers.
type authCode struct {
	redirect        string // redirect_uri it was issued for
	challenge       string // PKCE code_challenge, "" without PKCE
	challengeMethod string // "S256" or "plain"
}
