//! The sentences of the multi-locale corpus: what users and agents write to each other in
//! a support or operations chat, per language, with slots for the values. Negatives are
//! messages with no PII at all, full of what must survive redaction: ports, HTTP codes,
//! versions, ticket and order numbers, dates and times in the locale's formats, amounts,
//! product and protocol names, and common words that are also names.

/// A slot in a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// `{person}`: the conversation's person, full name as the locale writes it.
    Person,
    /// `{other}`: somebody else.
    OtherPerson,
    /// `{given}`: the conversation's person by given name (a later mention).
    Given,
    /// `{phone}`.
    Phone,
    /// `{address}`: a one-line street address.
    Address,
    /// `{company}`.
    Company,
    /// `{email}`.
    Email,
    /// `{iban}`.
    Iban,
}

impl Slot {
    /// The slot named `name`, if it is one.
    pub fn parse(name: &str) -> Option<Slot> {
        Some(match name {
            "person" => Slot::Person,
            "other" => Slot::OtherPerson,
            "given" => Slot::Given,
            "phone" => Slot::Phone,
            "address" => Slot::Address,
            "company" => Slot::Company,
            "email" => Slot::Email,
            "iban" => Slot::Iban,
            _ => return None,
        })
    }
}

/// One language's templates.
pub struct Language {
    /// Messages with PII.
    pub pii: &'static [&'static str],
    /// Later mentions of the conversation's person.
    pub follow_ups: &'static [&'static str],
    /// Messages without PII.
    pub negatives: &'static [&'static str],
}

/// The templates of `locale`'s language.
pub fn language(locale: &str) -> &'static Language {
    match locale {
        "de_DE" => &GERMAN,
        "fr_FR" => &FRENCH,
        "es_ES" => &SPANISH,
        _ => &ENGLISH,
    }
}

static ENGLISH: Language = Language {
    pii: &[
        "Hi, this is {person} from {company}. You can reach me on {phone}.",
        "please ship the replacement to {address}",
        "Customer {person} says the invoice was sent to {email} but never arrived.",
        "Can you call {person} back at {phone}? They asked about ticket 48213.",
        "New billing address for {company}: {address}.",
        "Refund to IBAN {iban}, account holder {person}.",
        "ok so {person} wants the contract moved over to {company} by friday",
        "Escalating: {other} (manager at {company}) called from {phone} about the outage.",
        "Thanks,\n{person}\n{company}\n{phone}",
        "The courier could not find {address}; the driver tried {phone} twice.",
        "Please add {person} <{email}> to the cc list for the renewal.",
        "{person} and {other} both asked for a callback on {phone}.",
        "My new number is {phone}, the old one is disconnected.",
        "Delivery for {company}, {address}, attention {person}.",
        "ask {given} whether {company} signed the NDA",
    ],
    follow_ups: &[
        "Thanks {given}, I'll pass that on.",
        "{given} confirmed the order this morning.",
        "ping {given} again if there's no answer by 5pm",
        "Did {given} get the tracking link?",
    ],
    negatives: &[
        "Kubernetes and port 8080 are fine, the 503s came from the load balancer.",
        "Will you check whether release 2.4.1 fixed the retry bug?",
        "The May 3 deploy rolled back after 14 minutes; see INC-2291.",
        "Order #88123 shipped on 2024-03-12, tracking 1Z999AA10123456784.",
        "Set max_tokens to 4096 and temperature to 0.2 for the summary step.",
        "HTTP 429 again at 09:41 UTC, we are over the rate limit.",
        "The SKU-7731 price went from $49.99 to $54.00 last week.",
        "Grace period is 30 days; after that the account is archived.",
        "Hope is not a strategy: add an alert on p95 latency above 800 ms.",
        "Use TLS 1.3 on port 443 and drop the legacy cipher suites.",
        "Summer sale starts June 1st, banner copy is in the shared doc.",
        "the nightly job failed with exit code 137 (OOM), bump memory to 2 GiB",
    ],
};

static GERMAN: Language = Language {
    pii: &[
        "Hallo, hier ist {person} von {company}. Sie erreichen mich unter {phone}.",
        "Bitte schicken Sie das Ersatzgerät an {address}.",
        "Kunde {person} sagt, die Rechnung ging an {email}, kam aber nie an.",
        "Können Sie {person} unter {phone} zurückrufen? Es geht um Ticket 48213.",
        "Neue Rechnungsadresse der {company}: {address}.",
        "Erstattung bitte auf IBAN {iban}, Kontoinhaber {person}.",
        "also {person} möchte den Vertrag bis Freitag auf {company} umschreiben",
        "Eskalation: {other} ({company}) hat von {phone} wegen des Ausfalls angerufen.",
        "Mit freundlichen Grüßen\n{person}\n{company}\nTel. {phone}",
        "Der Kurier hat {address} nicht gefunden; der Fahrer hat zweimal {phone} versucht.",
        "Bitte nehmen Sie {person} <{email}> in CC für die Verlängerung.",
        "{person} und {other} bitten beide um Rückruf unter {phone}.",
        "Meine neue Nummer ist {phone}, die alte ist abgemeldet.",
        "Lieferung an {company}, {address}, z. Hd. {person}.",
        "frag mal {given}, ob {company} die Vereinbarung unterschrieben hat",
    ],
    follow_ups: &[
        "Danke {given}, ich gebe das weiter.",
        "{given} hat die Bestellung heute früh bestätigt.",
        "bitte {given} nochmal anschreiben, falls bis 17 Uhr keine Antwort kommt",
        "Hat {given} den Sendungslink bekommen?",
    ],
    negatives: &[
        "Kubernetes und Port 8080 laufen, die 503er kamen vom Load Balancer.",
        "Hat Version 2.4.1 den Fehler beim Wiederholen behoben?",
        "Das Deployment vom 03.05.2024 wurde nach 14 Minuten zurückgerollt, siehe INC-2291.",
        "Bestellung Nr. 88123 ging am 12.03.2024 raus, Sendungsnummer 00340434161234567890.",
        "Setz max_tokens auf 4096 und die Temperatur auf 0,2 für die Zusammenfassung.",
        "Wieder HTTP 429 um 09:41 Uhr, wir sind über dem Limit.",
        "Der Preis von Artikel 7731 ging von 49,99 € auf 54,00 € hoch.",
        "Die Kulanzfrist beträgt 30 Tage, danach wird das Konto archiviert.",
        "Bitte TLS 1.3 auf Port 443 erzwingen und die alten Cipher Suites entfernen.",
        "Der Sommerschlussverkauf beginnt am 1. Juni, der Bannertext liegt im Wiki.",
        "der nächtliche Job ist mit Exit-Code 137 abgebrochen, bitte Speicher auf 2 GiB erhöhen",
        "Die Latenz im p95 liegt bei 800 ms, das ist zu hoch für den Checkout.",
    ],
};

static FRENCH: Language = Language {
    pii: &[
        "Bonjour, ici {person} de {company}. Vous pouvez me joindre au {phone}.",
        "merci d'envoyer l'appareil de remplacement au {address}",
        "Le client {person} dit que la facture a été envoyée à {email} mais n'est jamais arrivée.",
        "Pouvez-vous rappeler {person} au {phone} ? C'est pour le ticket 48213.",
        "Nouvelle adresse de facturation pour {company} : {address}.",
        "Remboursement sur l'IBAN {iban}, titulaire {person}.",
        "donc {person} veut transférer le contrat chez {company} avant vendredi",
        "Escalade : {other} ({company}) a appelé du {phone} au sujet de la panne.",
        "Cordialement,\n{person}\n{company}\nTél. : {phone}",
        "Le livreur n'a pas trouvé le {address} ; il a essayé le {phone} deux fois.",
        "Merci d'ajouter {person} <{email}> en copie pour le renouvellement.",
        "{person} et {other} demandent tous les deux à être rappelés au {phone}.",
        "Mon nouveau numéro est le {phone}, l'ancien ne fonctionne plus.",
        "Livraison pour {company}, {address}, à l'attention de {person}.",
        "demande à {given} si {company} a signé l'accord de confidentialité",
    ],
    follow_ups: &[
        "Merci {given}, je transmets.",
        "{given} a confirmé la commande ce matin.",
        "relance {given} s'il n'y a pas de réponse avant 17 h",
        "Est-ce que {given} a reçu le lien de suivi ?",
    ],
    negatives: &[
        "Kubernetes et le port 8080 vont bien, les 503 venaient du répartiteur de charge.",
        "Est-ce que la version 2.4.1 a corrigé le bug des nouvelles tentatives ?",
        "Le déploiement du 03/05/2024 a été annulé au bout de 14 minutes, voir INC-2291.",
        "La commande n° 88123 est partie le 12/03/2024, suivi 6A12345678901.",
        "Mets max_tokens à 4096 et la température à 0,2 pour l'étape de résumé.",
        "Encore une erreur HTTP 429 à 09 h 41, on dépasse la limite.",
        "Le prix de l'article 7731 est passé de 49,99 € à 54,00 €.",
        "Le délai de grâce est de 30 jours, ensuite le compte est archivé.",
        "Active TLS 1.3 sur le port 443 et supprime les anciennes suites de chiffrement.",
        "Les soldes d'été commencent le 1er juin, le texte de la bannière est dans le wiki.",
        "le job de nuit a échoué avec le code 137, augmente la mémoire à 2 Gio",
        "La latence p95 est à 800 ms, c'est trop pour le paiement.",
    ],
};

static SPANISH: Language = Language {
    pii: &[
        "Hola, soy {person} de {company}. Me puede localizar en el {phone}.",
        "por favor envíen el equipo de sustitución a {address}",
        "El cliente {person} dice que la factura se envió a {email} pero nunca llegó.",
        "¿Puede llamar a {person} al {phone}? Es por el ticket 48213.",
        "Nueva dirección de facturación de {company}: {address}.",
        "Reembolso al IBAN {iban}, titular {person}.",
        "o sea que {person} quiere pasar el contrato a {company} antes del viernes",
        "Escalado: {other} ({company}) llamó desde el {phone} por la caída del servicio.",
        "Saludos,\n{person}\n{company}\nTel. {phone}",
        "El mensajero no encontró {address}; el conductor probó el {phone} dos veces.",
        "Añadan a {person} <{email}> en copia para la renovación.",
        "{person} y {other} piden que les llamen al {phone}.",
        "Mi nuevo número es el {phone}, el antiguo ya no funciona.",
        "Entrega para {company}, {address}, a la atención de {person}.",
        "pregúntale a {given} si {company} firmó el acuerdo de confidencialidad",
    ],
    follow_ups: &[
        "Gracias {given}, lo paso al equipo.",
        "{given} confirmó el pedido esta mañana.",
        "vuelve a escribir a {given} si no contesta antes de las 17:00",
        "¿Le llegó a {given} el enlace de seguimiento?",
    ],
    negatives: &[
        "Kubernetes y el puerto 8080 están bien, los 503 venían del balanceador.",
        "¿La versión 2.4.1 arregló el fallo de los reintentos?",
        "El despliegue del 03/05/2024 se revirtió a los 14 minutos, ver INC-2291.",
        "El pedido n.º 88123 salió el 12/03/2024, seguimiento PK123456789ES.",
        "Pon max_tokens a 4096 y la temperatura a 0,2 para el resumen.",
        "Otra vez HTTP 429 a las 09:41, estamos por encima del límite.",
        "El precio del artículo 7731 pasó de 49,99 € a 54,00 €.",
        "El periodo de gracia es de 30 días; después la cuenta se archiva.",
        "Activa TLS 1.3 en el puerto 443 y quita los cifrados antiguos.",
        "Las rebajas de verano empiezan el 1 de junio, el texto del banner está en la wiki.",
        "el proceso nocturno falló con código 137, sube la memoria a 2 GiB",
        "La latencia p95 está en 800 ms, demasiado para el pago.",
    ],
};
