-- macro: platform_managed_write
-- description: A managed platform's add-on manager (platform_addon_managers:
--    EKS, AKS, GKE) wrote an object it labels as its own
--    (platform_managed_labels). The label is checked in the request body,
--    so the same identity changing anything else is reported.
COALESCE(
  in_list(user_info.username, 'platform_addon_managers')
  AND any_in_list(json_object_keys(request_object, 'metadata', 'labels'), 'platform_managed_labels'),
  FALSE)
