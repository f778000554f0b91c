package pandadoctest

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"
)

// The routes of every class of PandaDoc's rate limits, beyond the list
// and the creation of documents (api.go): a document's status, details,
// send, downloads and delete, an upload, templates and content-library
// items, and notarization requests. They answer as PandaDoc does, in
// shape; the templates and content-library items are whatever ID is
// asked for.

// fakePDF is the body of a download.
const fakePDF = "%PDF-1.4\n% pandadoctest\n%%EOF\n"

// documentDetails is a document's details, as PandaDoc shapes them.
type documentDetails struct {
	document
	Recipients []any          `json:"recipients"`
	Metadata   map[string]any `json:"metadata"`
}

// serveRoute answers the routes of this file and reports whether path
// was one of them.
func (s *Server) serveRoute(w http.ResponseWriter, r *http.Request, path string) bool {
	if path == "/public/v2/notary/notarization-requests" && r.Method == http.MethodPost {
		io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, maxDocumentBytes))
		s.apiJSON(w, http.StatusCreated, map[string]string{"id": randomID(), "status": "sent"})
		return true
	}
	if path == "/public/v1/documents" && r.Method == http.MethodPost && r.URL.Query().Has("upload") {
		s.uploadDocument(w, r)
		return true
	}
	rest, ok := strings.CutPrefix(path, "/public/v1/")
	if !ok {
		return false
	}
	kind, rest, _ := strings.Cut(rest, "/")
	id, sub, _ := strings.Cut(rest, "/")
	switch kind {
	case "documents":
		if id == "" {
			return false
		}
		return s.serveDocument(w, r, id, sub)
	case "templates", "content-library-items":
		return s.serveLibrary(w, r, id, sub)
	}
	return false
}

// serveDocument answers the routes of one document.
func (s *Server) serveDocument(w http.ResponseWriter, r *http.Request, id, sub string) bool {
	route := r.Method + " " + sub
	switch route {
	case "GET ", "DELETE ", "GET details", "POST send", "GET download", "GET download-protected":
	default:
		return false
	}
	io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, maxDocumentBytes))
	s.mu.Lock()
	i := s.docIndexLocked(id)
	if i < 0 {
		s.mu.Unlock()
		s.apiJSON(w, http.StatusNotFound, apiError{"not_found", "Not found."})
		return true
	}
	doc := s.docs[i]
	switch route {
	case "DELETE ":
		s.docs = append(s.docs[:i], s.docs[i+1:]...)
	case "POST send":
		if doc.Status == "document.sent" {
			s.mu.Unlock()
			// PandaDoc sends a document only in draft: a replayed send is
			// a conflict, not a second email.
			s.apiJSON(w, http.StatusConflict, apiError{"request_error", "Document is not in draft status."})
			return true
		}
		doc.Status = "document.sent"
		doc.DateModified = s.now().UTC().Format(time.RFC3339Nano)
		s.docs[i] = doc
	}
	s.mu.Unlock()
	switch route {
	case "GET ":
		s.apiJSON(w, http.StatusOK, doc)
	case "DELETE ":
		s.countAPI(http.StatusNoContent)
		w.WriteHeader(http.StatusNoContent)
	case "GET details":
		s.apiJSON(w, http.StatusOK, documentDetails{document: doc, Recipients: []any{}, Metadata: map[string]any{}})
	case "POST send":
		s.apiJSON(w, http.StatusOK, map[string]string{"id": doc.ID, "name": doc.Name, "status": doc.Status})
	default: // the downloads
		s.countAPI(http.StatusOK)
		w.Header().Set("Content-Type", "application/pdf")
		io.WriteString(w, fakePDF)
	}
	return true
}

// docIndexLocked returns the index of document id in s.docs, or -1.
// s.mu must be held.
func (s *Server) docIndexLocked(id string) int {
	for i, d := range s.docs {
		if d.ID == id {
			return i
		}
	}
	return -1
}

// uploadDocument is POST /public/v1/documents?upload: a multipart body
// with the PDF in "file" and the document's JSON in "data".
func (s *Server) uploadDocument(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxDocumentBytes)
	if err := r.ParseMultipartForm(1 << 20); err != nil {
		s.apiJSON(w, http.StatusBadRequest, apiError{"request_error", "The upload is not a multipart form."})
		return
	}
	defer r.MultipartForm.RemoveAll()
	var data struct {
		Name string `json:"name"`
	}
	if v := r.FormValue("data"); v != "" {
		if err := json.Unmarshal([]byte(v), &data); err != nil {
			s.apiJSON(w, http.StatusBadRequest, apiError{"request_error", "The data field is not a valid JSON object."})
			return
		}
	}
	s.apiJSON(w, http.StatusCreated, s.addDocument(data.Name))
}

// addDocument creates a document named name.
func (s *Server) addDocument(name string) document {
	now := s.now().UTC().Format(time.RFC3339Nano)
	doc := document{ID: randomID(), Name: name, Status: "document.uploaded", DateCreated: now, DateModified: now}
	s.mu.Lock()
	s.docs = append(s.docs, doc)
	s.mu.Unlock()
	return doc
}

// serveLibrary answers the templates and content-library items: an
// empty list, and any ID as an item.
func (s *Server) serveLibrary(w http.ResponseWriter, r *http.Request, id, sub string) bool {
	io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, maxDocumentBytes))
	switch {
	case id == "" && r.Method == http.MethodGet:
		s.apiJSON(w, http.StatusOK, map[string][]any{"results": {}})
	case id != "" && sub == "" && r.Method == http.MethodDelete:
		s.countAPI(http.StatusNoContent)
		w.WriteHeader(http.StatusNoContent)
	case id != "" && (sub == "" || sub == "details") && r.Method == http.MethodGet:
		s.apiJSON(w, http.StatusOK, map[string]string{"id": id, "name": "Item " + id})
	default:
		return false
	}
	return true
}
