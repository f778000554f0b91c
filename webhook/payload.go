package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"
)

// Document statuses (DocumentStatusEnum in PandaDoc's OpenAPI
// specification), as Document.Status carries them.
const (
	StatusDraft           = "document.draft"
	StatusSent            = "document.sent"
	StatusViewed          = "document.viewed"
	StatusWaitingApproval = "document.waiting_approval"
	StatusApproved        = "document.approved"
	StatusRejected        = "document.rejected"
	StatusWaitingPay      = "document.waiting_pay"
	StatusPaid            = "document.paid"
	StatusCompleted       = "document.completed"
	StatusVoided          = "document.voided"
	StatusDeclined        = "document.declined"
	StatusUploaded        = "document.uploaded"
	StatusError           = "document.error"
	StatusExternalReview  = "document.external_review"
)

// A Document is the data of a document event (document_state_changed,
// recipient_completed, document_updated, document_deleted,
// document_completed_pdf_ready, quote_updated, …). PandaDoc's payload
// "partially mirrors" its Document Details answer; these are its fields
// as its webhook reference documents them. Fields a delivery lacks stay
// zero.
type Document struct {
	ID                        string         `json:"id"`
	Name                      string         `json:"name"`
	Status                    string         `json:"status"` // one of the Status constants
	DateCreated               time.Time      `json:"date_created"`
	DateModified              time.Time      `json:"date_modified"`
	ExpirationDate            *time.Time     `json:"expiration_date"`
	AutonumberingSequenceName string         `json:"autonumbering_sequence_name"`
	CreatedBy                 *User          `json:"created_by"`
	SentBy                    *User          `json:"sent_by"`
	Recipients                []Recipient    `json:"recipients"`
	GrandTotal                *Money         `json:"grand_total"`
	Template                  *TemplateRef   `json:"template"`
	Version                   string         `json:"version"`
	Tags                      []string       `json:"tags"`
	Metadata                  map[string]any `json:"metadata"`
	LinkedObjects             []LinkedObject `json:"linked_objects"`

	// ActionBy and ActionDate say who completed the document and when,
	// in recipient_completed events.
	ActionBy   *User      `json:"action_by"`
	ActionDate *time.Time `json:"action_date"`

	// Raw is the event's data as sent, with what a subscription may add
	// (fields, tokens, products, pricing) and what PandaDoc adds later.
	Raw json.RawMessage `json:"-"`

	// Unparsed names, in the order above, the fields whose JSON did not
	// have the documented type; they hold what could be decoded of it
	// (often nothing), and Raw holds them as sent.
	Unparsed []string `json:"-"`
}

// A User is a PandaDoc user of a payload: who created, sent or
// completed a document.
type User struct {
	ID           string `json:"id"`
	Email        string `json:"email"`
	FirstName    string `json:"first_name"`
	LastName     string `json:"last_name"`
	Avatar       string `json:"avatar"`
	MembershipID string `json:"membership_id"`
}

// A Recipient is a recipient of a document, as a payload lists it.
type Recipient struct {
	ID            string   `json:"id"`
	Type          string   `json:"type"`
	FirstName     string   `json:"first_name"`
	LastName      string   `json:"last_name"`
	Email         string   `json:"email"`
	Phone         string   `json:"phone"`
	RecipientType string   `json:"recipient_type"` // "SIGNER", "CC", "APPROVER"
	HasCompleted  bool     `json:"has_completed"`
	Role          string   `json:"role"`
	Roles         []string `json:"roles"`
	SigningOrder  *int     `json:"signing_order"`
	ContactID     string   `json:"contact_id"`
	SharedLink    string   `json:"shared_link"` // may be empty in webhooks: PandaDoc fills it asynchronously
}

// Money is an amount in a currency; PandaDoc sends the amount as a
// decimal string, such as "1500.00".
type Money struct {
	Amount   string `json:"amount"`
	Currency string `json:"currency"` // ISO 4217, such as "EUR"
}

// A TemplateRef names the template a document was created from.
type TemplateRef struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// A LinkedObject is a CRM object linked to a document.
type LinkedObject struct {
	ID         string `json:"id"`
	Provider   string `json:"provider"`
	EntityType string `json:"entity_type"`
	EntityID   string `json:"entity_id"`
}

// A Template is the data of a template event (template_created,
// template_updated, template_deleted).
type Template struct {
	ID           string    `json:"id"`
	Name         string    `json:"name"`
	DateCreated  time.Time `json:"date_created"`
	DateModified time.Time `json:"date_modified"`
	Tags         []string  `json:"tags"`

	Raw      json.RawMessage `json:"-"` // as Document.Raw
	Unparsed []string        `json:"-"` // as Document.Unparsed
}

// A ContentLibraryItem is the data of a content library event
// (content_library_item_created, content_library_item_creation_failed).
type ContentLibraryItem struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	DateCreated time.Time `json:"date_created"`
	Status      string    `json:"status"`

	Raw      json.RawMessage `json:"-"` // as Document.Raw
	Unparsed []string        `json:"-"` // as Document.Unparsed
}

// Document decodes the event's data as a document. It is lenient as
// PandaDoc's payloads change: unknown fields are ignored (Raw keeps
// them), and a known field of another type than documented is listed in
// Unparsed instead of failing the event. It fails, with ErrMalformed,
// only when the data is not a JSON object. It does not check the event
// type: switch on e.Event first.
func (e Event) Document() (*Document, error) {
	d := new(Document)
	u, err := decodeLenient(e.Data, d)
	if err != nil {
		return nil, err
	}
	d.Raw, d.Unparsed = e.Data, u
	return d, nil
}

// Template decodes the event's data as a template, leniently like
// Document.
func (e Event) Template() (*Template, error) {
	t := new(Template)
	u, err := decodeLenient(e.Data, t)
	if err != nil {
		return nil, err
	}
	t.Raw, t.Unparsed = e.Data, u
	return t, nil
}

// ContentLibraryItem decodes the event's data as a content library
// item, leniently like Document.
func (e Event) ContentLibraryItem() (*ContentLibraryItem, error) {
	c := new(ContentLibraryItem)
	u, err := decodeLenient(e.Data, c)
	if err != nil {
		return nil, err
	}
	c.Raw, c.Unparsed = e.Data, u
	return c, nil
}

// decodeLenient decodes the JSON object data into the struct dst points
// to, one field at a time by its json tag, so that a field of an
// unexpected type costs that field only. It returns the names of such
// fields, in the struct's order. A field whose JSON has another type is
// left zero; a type mismatch inside a field (in one recipient, say)
// keeps what encoding/json could decode of the rest.
func decodeLenient(data json.RawMessage, dst any) ([]string, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil || fields == nil {
		return nil, fmt.Errorf("%w: the event's data is not a JSON object", ErrMalformed)
	}
	v := reflect.ValueOf(dst).Elem()
	t := v.Type()
	var unparsed []string
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		raw, ok := fields[name]
		if name == "" || name == "-" || !ok {
			continue
		}
		p := reflect.New(t.Field(i).Type)
		err := json.Unmarshal(raw, p.Interface())
		// A mismatch inside the field (te.Field names where) leaves the
		// rest of it decoded; one of the field itself leaves nothing.
		var te *json.UnmarshalTypeError
		if err == nil || errors.As(err, &te) && te.Field != "" {
			v.Field(i).Set(p.Elem())
		}
		if err != nil {
			unparsed = append(unparsed, name)
		}
	}
	return unparsed, nil
}
