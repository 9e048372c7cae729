-- id: k8s.csr_client_certificate
-- title: Client certificate requested for API access
-- severity: medium
-- description: A CertificateSigningRequest for the kube-apiserver-client signer
--    (client auth) was created by a user or workload. Once approved, the
--    certificate is a long-lived credential that cannot be revoked short of
--    rotating the cluster CA. Reported whoever asks, system accounts included;
--    kubelets' own certificates use other signers (kube-apiserver-client-kubelet,
--    kubelet-serving) and are not this rule's.
-- mitre: T1098, T1552, T1649
-- source: k8s_audit
-- tags: attack, persistence, credential_access
-- author: Vigil
-- references: https://stratus-red-team.cloud/attack-techniques/kubernetes/k8s.persistence.create-client-certificate/
-- based_on: panther:Kubernetes.ClientCertificate.Created
SELECT
  user_info.username AS username,
  object_name() AS csr,
  json_get_str(request_object, 'spec', 'signerName') AS signer,
  json_path_values(request_object, '$.spec.usages[*]') AS usages,
  json_path_values(request_object, '$.spec.groups[*]') AS requested_groups,
  source_ips[1] AS source_ip,
  user_agent AS user_agent
FROM k8s_audit
WHERE object_ref.resource = 'certificatesigningrequests'
  AND COALESCE(object_ref.subresource, '') = ''
  AND verb = 'create'
  AND request_succeeded()
  AND json_get_str(request_object, 'spec', 'signerName') = 'kubernetes.io/kube-apiserver-client'
