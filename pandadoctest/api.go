package pandadoctest

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gopandadoc/pandadocauth/internal/fakepandadoc"
)

// maxDocumentBytes bounds the body of a document creation.
const maxDocumentBytes = 10 << 20

// unauthorizedBody is PandaDoc's answer to a request to its API without
// working credentials: missing, expired, revoked or unknown alike.
const unauthorizedBody = `{"type":"authentication_error","detail":"Authentication credentials were not provided."}`

// document is a document of the API, as PandaDoc lists it.
type document struct {
	ID           string `json:"id"`
	Name         string `json:"name"`
	Status       string `json:"status"`
	DateCreated  string `json:"date_created"`
	DateModified string `json:"date_modified"`
}

// apiError is the shape of PandaDoc's API errors.
type apiError struct {
	Type   string `json:"type"`
	Detail string `json:"detail"`
}

// serveAPI is /public/v1/ and /public/v2/. Like PandaDoc, it checks the
// credentials before anything else, then the rate limits.
func (s *Server) serveAPI(w http.ResponseWriter, r *http.Request) {
	if !s.authenticated(r.Header.Get("Authorization")) {
		// Read the body as PandaDoc's front end would, so that a client
		// retrying with fresh credentials needs a fresh body.
		io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, maxDocumentBytes))
		s.countAPI(http.StatusUnauthorized)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(unauthorizedBody)))
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, unauthorizedBody)
		return
	}

	if s.throttled(w, r, s.userOf(r.Header.Get("Authorization"))) {
		return
	}
	path := strings.TrimSuffix(r.URL.Path, "/")
	switch {
	case s.serveRoute(w, r, path): // routes.go
	case path == "/public/v1/documents" && r.Method == http.MethodGet:
		s.listDocuments(w)
	case path == "/public/v1/documents" && r.Method == http.MethodPost:
		s.createDocument(w, r)
	case path == "/public/v1/documents":
		w.Header().Set("Allow", "GET, POST")
		s.apiJSON(w, http.StatusMethodNotAllowed,
			apiError{"method_not_allowed", "Method \"" + r.Method + "\" not allowed."})
	default:
		s.apiJSON(w, http.StatusNotFound, apiError{"not_found", "Not found."})
	}
}

// authenticated reports whether an Authorization header value carries a
// current access token or the API key.
func (s *Server) authenticated(h string) bool {
	scheme, cred, ok := strings.Cut(h, " ")
	cred = strings.TrimSpace(cred)
	if !ok || cred == "" {
		return false
	}
	switch {
	case strings.EqualFold(scheme, "Bearer"):
		return s.eng.ValidAccessToken(cred)
	case strings.EqualFold(scheme, "API-Key"):
		return s.apiKey != "" && subtle.ConstantTimeCompare([]byte(cred), []byte(s.apiKey)) == 1
	}
	return false
}

// listDocuments is GET /public/v1/documents: the documents created so
// far.
func (s *Server) listDocuments(w http.ResponseWriter) {
	s.mu.Lock()
	results := append([]document{}, s.docs...)
	s.mu.Unlock()
	s.apiJSON(w, http.StatusOK, map[string][]document{"results": results})
}

// createDocument is POST /public/v1/documents: it reads the whole JSON
// body and answers 201 with the new document, named as the body says.
func (s *Server) createDocument(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxDocumentBytes))
	if err != nil {
		s.apiJSON(w, http.StatusBadRequest, apiError{"request_error", "The request body could not be read."})
		return
	}
	var req struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		s.apiJSON(w, http.StatusBadRequest, apiError{"request_error", "The request body is not a valid JSON object."})
		return
	}
	now := s.now().UTC().Format(time.RFC3339Nano)
	doc := document{
		ID:           randomID(),
		Name:         req.Name,
		Status:       "document.uploaded",
		DateCreated:  now,
		DateModified: now,
	}
	s.mu.Lock()
	s.docs = append(s.docs, doc)
	s.mu.Unlock()
	s.apiJSON(w, http.StatusCreated, doc)
}

// apiJSON counts the request and answers status with v as JSON.
func (s *Server) apiJSON(w http.ResponseWriter, status int, v any) {
	s.countAPI(status)
	fakepandadoc.WriteJSON(w, status, v)
}

// countAPI counts an API request answered with status. It is called
// before the answer is written, so a client that has its answer sees it
// counted.
func (s *Server) countAPI(status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apiRequests[status]++
	s.apiTotal++
	s.notifyLocked()
}

// randomID returns a document ID of PandaDoc's length: 22 characters.
func randomID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic("pandadoctest: crypto/rand: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}
