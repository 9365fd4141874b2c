DROP INDEX messages_media;
DROP TABLE media_uploads;
DROP TABLE media;
